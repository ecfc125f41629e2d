-- Who sent a conversation's last message, when it named them (a group's member): an erasure
-- clears the preview of every row whose last message is the erased contact's (docs/adr/0011).
-- Rows written before read NULL until the inbox is rebuilt (`colloquy projections rebuild
-- conversation_list`); an erasure then clears the previews of the contact's own conversations.
ALTER TABLE conversation_list ADD COLUMN last_message_sender_id text;

//! Messages inside a conversation: their kinds, senders, visibility, content parts (text,
//! attachments, e-mail envelope, location, template, interactive, contact cards), reactions, edit
//! history and delivery status, with the rules that check a new message's content.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::footprint;
use crate::ids::MessageId;
use crate::validate::{self, FieldError, MAX_MESSAGE_TEXT, MAX_SHORT_TEXT};

/// What a message is; decides which content parts it must carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessageType {
    /// Plain text; `text` is required.
    #[default]
    Text,
    /// Images, audio, video or documents; at least one attachment, `text` is the caption.
    Media,
    /// A provider template (e.g. a WhatsApp HSM); `template` is required.
    Template,
    /// Buttons, lists or carousels; `interactive` is required.
    Interactive,
    /// A shared location; `location` is required.
    Location,
    /// Shared contact cards; `contacts` is required.
    Contacts,
    /// A sticker; exactly one attachment.
    Sticker,
    /// An e-mail; `email` (the envelope) is required and `text` is the body.
    Email,
    /// A system notice shown in the thread; `text` is required.
    System,
}

impl MessageType {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Media => "media",
            Self::Template => "template",
            Self::Interactive => "interactive",
            Self::Location => "location",
            Self::Contacts => "contacts",
            Self::Sticker => "sticker",
            Self::Email => "email",
            Self::System => "system",
        }
    }
}

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SenderKind {
    /// A human agent.
    User,
    /// The contact the conversation is with.
    Customer,
    /// An automation.
    Bot,
    /// An AI assistant.
    AiAssistant,
    /// Colloquy or the provider.
    System,
    /// An anonymous web visitor.
    Visitor,
}

impl SenderKind {
    /// Whether messages of this sender come in from the customer's side.
    pub fn is_incoming(self) -> bool {
        matches!(self, Self::Customer | Self::Visitor)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Customer => "customer",
            Self::Bot => "bot",
            Self::AiAssistant => "ai_assistant",
            Self::System => "system",
            Self::Visitor => "visitor",
        }
    }
}

/// A message's sender: its kind and, where it has one, its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sender {
    /// The kind of sender.
    pub kind: SenderKind,
    /// The sender's id: a user id, a contact id, a bot id.
    #[serde(default)]
    pub id: Option<String>,
}

/// Who may see a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Visibility {
    /// Part of the thread the customer sees.
    #[default]
    Public,
    /// A note for the team only.
    Internal,
    /// Kept for the record, shown to nobody by default.
    Hidden,
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attachment {
    /// Where the file is (http or https).
    pub url: String,
    /// Its file name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its MIME type.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// Its size in bytes.
    #[serde(default, deserialize_with = "crate::whole::optional_u64")]
    pub size: Option<u64>,
}

/// Which way an e-mail went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Direction {
    /// Received from the customer.
    Inbound,
    /// Sent to the customer.
    Outbound,
}

/// The envelope of an e-mail message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailEnvelope {
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Carbon copies.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Blind carbon copies.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Subject line.
    #[serde(default)]
    pub subject: Option<String>,
    /// The provider's thread id.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// The Message-ID this one answers.
    #[serde(default)]
    pub in_reply_to: Option<String>,
    /// Where replies should go, when not to `from`.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Inbound or outbound.
    pub direction: Direction,
}

/// A shared location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Location {
    /// Degrees north, -90 to 90.
    pub latitude: f64,
    /// Degrees east, -180 to 180.
    pub longitude: f64,
    /// A place name.
    #[serde(default)]
    pub name: Option<String>,
    /// A street address.
    #[serde(default)]
    pub address: Option<String>,
}

/// The content of a new message, as the sender gave it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageContent {
    /// What kind of message.
    pub message_type: MessageType,
    /// Text, caption or e-mail body.
    pub text: Option<String>,
    /// Files.
    pub attachments: Vec<Attachment>,
    /// The message this one replies to.
    pub reply_to: Option<MessageId>,
    /// Whether it was forwarded from elsewhere.
    pub forwarded: bool,
    /// Ids of the users mentioned or, in groups, `mention://contact/<id>` of the members.
    pub mentions: Vec<String>,
    /// In a group, whether the sender wrote `@everyone`; `mentions` then holds the members of
    /// that moment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mentions_everyone: bool,
    // The parts below are rare and large; boxed, a message without them takes 8 bytes for each
    // instead of up to 200 (every message of a cached conversation is held in memory). A box
    // reads and writes the same JSON as what it holds.
    /// E-mail envelope, for e-mail messages.
    pub email: Option<Box<EmailEnvelope>>,
    /// Location, for location messages.
    pub location: Option<Box<Location>>,
    /// Provider template payload.
    pub template: Option<Box<Value>>,
    /// Interactive payload (buttons, lists, carousels).
    pub interactive: Option<Box<Value>>,
    /// Contact cards.
    pub contacts: Option<Box<Value>>,
    /// Integrator-owned JSON object.
    pub metadata: Map<String, Value>,
}

/// A new message: who sends it, who may see it, and its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// The message's id, chosen by the caller.
    pub message_id: MessageId,
    /// Who sends it.
    pub sender: Sender,
    /// Who may see it.
    pub visibility: Visibility,
    /// What it says.
    pub content: MessageContent,
}

/// Delivery progress of an outgoing message, as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryStatus {
    /// Handed to the provider.
    Sent,
    /// Reached the customer's device.
    Delivered,
    /// Read by the customer.
    Read,
    /// Could not be delivered; final.
    Failed,
}

impl DeliveryStatus {
    /// Progress order of the non-failure states; a report of a lower rank than the current one
    /// arrived late and changes nothing.
    pub(crate) fn rank(self) -> u8 {
        match self {
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        }
    }
}

/// Why a delivery failed, as the provider says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryError {
    /// The provider's error code.
    #[serde(default)]
    pub code: Option<String>,
    /// A sentence saying what went wrong.
    pub reason: String,
}

/// A reaction on a message: one emoji from one sender.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reaction {
    /// The emoji.
    pub emoji: String,
    /// Who reacted.
    pub sender: Sender,
}

/// An earlier text of an edited message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Edit {
    /// The text before this edit.
    pub previous_text: Option<String>,
    /// When it was replaced.
    pub edited_at: DateTime<Utc>,
}

/// A message as it stands now, inside the Conversation aggregate.
///
/// A cached conversation holds every one of its messages in memory, so the fields every message
/// has are inline and the rest is behind one box that most messages leave empty: 112 bytes
/// (`size_of`) before the text, where the message's whole content inline took 304. Read the
/// content through [`Message::content`]; the rules read the fields and accessors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// 1-based position in the conversation, oldest first.
    pub position: u64,
    /// Sender.
    pub sender: Sender,
    /// Visibility.
    pub visibility: Visibility,
    /// What kind of message.
    pub message_type: MessageType,
    /// Latest delivery status, for outgoing messages.
    pub delivery_status: Option<DeliveryStatus>,
    /// Text, caption or e-mail body, as last edited.
    text: Option<Box<str>>,
    /// Everything else: `None` for a message with no other part, no reaction, no edit and no
    /// delivery error.
    rest: Option<Box<MessageRest>>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The parts of a [`Message`] that most messages do not have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct MessageRest {
    /// The content as added, less its type and text (kept on the message; here the defaults).
    content: MessageContent,
    reactions: Vec<Reaction>,
    edit_history: Vec<Edit>,
    delivery_error: Option<Box<DeliveryError>>,
}

impl Message {
    /// A message as added, with no reaction, edit or delivery report yet.
    pub fn new(
        id: MessageId,
        position: u64,
        sender: Sender,
        visibility: Visibility,
        mut content: MessageContent,
        created_at: DateTime<Utc>,
    ) -> Self {
        let text = content.text.take().map(String::into_boxed_str);
        let message_type = std::mem::take(&mut content.message_type);
        let rest = MessageRest { content, ..MessageRest::default() };
        Self {
            id,
            position,
            sender,
            visibility,
            message_type,
            delivery_status: None,
            text,
            rest: (!rest.is_empty()).then(|| Box::new(rest)),
            created_at,
            updated_at: created_at,
        }
    }

    /// Text, caption or e-mail body, as last edited.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// Reactions, in the order they came.
    pub fn reactions(&self) -> &[Reaction] {
        self.rest.as_ref().map_or(&[], |rest| &rest.reactions)
    }

    /// Earlier texts, oldest first.
    pub fn edit_history(&self) -> &[Edit] {
        self.rest.as_ref().map_or(&[], |rest| &rest.edit_history)
    }

    /// Why delivery failed.
    pub fn delivery_error(&self) -> Option<&DeliveryError> {
        self.rest.as_ref().and_then(|rest| rest.delivery_error.as_deref())
    }

    /// Its content as it stands, `text` as last edited: a copy, for a view.
    pub fn content(&self) -> MessageContent {
        let mut content = self.rest.as_ref().map(|rest| rest.content.clone()).unwrap_or_default();
        content.message_type = self.message_type;
        content.text = self.text.as_deref().map(str::to_owned);
        content
    }

    /// Replaces the text, keeping the one it replaces in the edit history.
    pub(crate) fn edit(&mut self, previous_text: Option<String>, text: String, edited_at: DateTime<Utc>) {
        self.rest_mut().edit_history.push(Edit { previous_text, edited_at });
        self.text = Some(text.into_boxed_str());
        self.updated_at = edited_at;
    }

    /// Adds a reaction.
    pub(crate) fn react(&mut self, reaction: Reaction, reacted_at: DateTime<Utc>) {
        self.rest_mut().reactions.push(reaction);
        self.updated_at = reacted_at;
    }

    /// Takes a reaction back.
    pub(crate) fn unreact(&mut self, reaction: &Reaction, removed_at: DateTime<Utc>) {
        if let Some(rest) = self.rest.as_deref_mut() {
            rest.reactions.retain(|r| r != reaction);
        }
        self.drop_empty_rest();
        self.updated_at = removed_at;
    }

    /// Records a delivery report.
    pub(crate) fn deliver(
        &mut self,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
        changed_at: DateTime<Utc>,
    ) {
        self.delivery_status = Some(status);
        match error {
            Some(error) => self.rest_mut().delivery_error = Some(Box::new(error)),
            None => {
                if let Some(rest) = self.rest.as_deref_mut() {
                    rest.delivery_error = None;
                }
                self.drop_empty_rest();
            }
        }
        self.updated_at = changed_at;
    }

    fn rest_mut(&mut self) -> &mut MessageRest {
        self.rest.get_or_insert_with(Box::default)
    }

    fn drop_empty_rest(&mut self) {
        if self.rest.as_deref().is_some_and(MessageRest::is_empty) {
            self.rest = None;
        }
    }

    /// What the message owns on the heap beyond its own size, estimated (see [`footprint`]).
    pub fn heap_footprint(&self) -> usize {
        footprint::optional_string(self.sender.id.as_ref())
            + self.text.as_deref().map_or(0, footprint::string)
            + footprint::boxed(self.rest.as_deref(), MessageRest::heap_footprint)
    }
}

impl MessageRest {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// What the parts own on the heap beyond their own size.
    fn heap_footprint(&self) -> usize {
        let reaction =
            |r: &Reaction| footprint::string(&r.emoji) + footprint::optional_string(r.sender.id.as_ref());
        self.content.heap_footprint()
            + footprint::vec(&self.reactions, self.reactions.capacity(), reaction)
            + footprint::vec(&self.edit_history, self.edit_history.capacity(), |edit| {
                footprint::optional_string(edit.previous_text.as_ref())
            })
            + footprint::boxed(self.delivery_error.as_deref(), |error| {
                footprint::optional_string(error.code.as_ref()) + footprint::string(&error.reason)
            })
    }
}

impl MessageContent {
    /// What the content owns on the heap beyond its own size, estimated.
    fn heap_footprint(&self) -> usize {
        let envelope = |e: &EmailEnvelope| {
            let addresses =
                |list: &Vec<String>| footprint::vec(list, list.capacity(), |a| footprint::string(a));
            footprint::string(&e.from)
                + addresses(&e.to)
                + addresses(&e.cc)
                + addresses(&e.bcc)
                + footprint::optional_strings([&e.subject, &e.thread_id, &e.in_reply_to, &e.reply_to])
        };
        let location = |l: &Location| {
            footprint::optional_string(l.name.as_ref()) + footprint::optional_string(l.address.as_ref())
        };
        let attachment = |a: &Attachment| {
            footprint::string(&a.url)
                + footprint::optional_string(a.name.as_ref())
                + footprint::optional_string(a.mime_type.as_ref())
        };
        footprint::optional_string(self.text.as_ref())
            + footprint::vec(&self.attachments, self.attachments.capacity(), attachment)
            + footprint::vec(&self.mentions, self.mentions.capacity(), |m| footprint::string(m))
            + footprint::boxed(self.email.as_deref(), envelope)
            + footprint::boxed(self.location.as_deref(), location)
            + [&self.template, &self.interactive, &self.contacts]
                .into_iter()
                .map(|part| footprint::boxed(part.as_deref(), footprint::json))
                .sum::<usize>()
            + footprint::json_object(&self.metadata)
    }
}

/// The longest preview kept of a message, in characters.
pub const PREVIEW_CHARS: usize = 140;
/// The most attachments one message carries.
pub const MAX_ATTACHMENTS: usize = 20;
/// The most mentions one message carries.
pub const MAX_MENTIONS: usize = 100;
const MAX_JSON_PART_BYTES: usize = 64 * 1024;

impl MessageContent {
    /// A one-line preview for lists: the text cut at [`PREVIEW_CHARS`], or a placeholder naming
    /// the kind of content.
    pub fn preview(&self) -> String {
        if let Some(text) = self.text.as_deref().filter(|t| !t.trim().is_empty()) {
            // Runs of white space become one space; stops at the limit rather than walking a
            // long text (this runs for every public message on every replay).
            let mut preview = String::with_capacity(PREVIEW_CHARS.min(text.len()));
            let mut count = 0;
            for word in text.split_whitespace() {
                for c in (count > 0).then_some(' ').into_iter().chain(word.chars()) {
                    if count == PREVIEW_CHARS {
                        return preview;
                    }
                    preview.push(c);
                    count += 1;
                }
            }
            return preview;
        }
        match self.message_type {
            MessageType::Media => "[media]",
            MessageType::Template => "[template]",
            MessageType::Interactive => "[interactive]",
            MessageType::Location => "[location]",
            MessageType::Contacts => "[contacts]",
            MessageType::Sticker => "[sticker]",
            MessageType::Email => "[e-mail]",
            MessageType::Text | MessageType::System => "",
        }
        .to_owned()
    }

    /// Checks the content against its type's rules and normalises text fields.
    pub fn validated(mut self) -> Result<Self, FieldError> {
        self.text = match self.text.as_deref() {
            Some(text) => {
                Some(validate::text("text", text, MAX_MESSAGE_TEXT, false)?).filter(|t| !t.is_empty())
            }
            None => None,
        };
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(FieldError::new("attachments", format!("at most {MAX_ATTACHMENTS} attachments")));
        }
        for attachment in &mut self.attachments {
            validate_attachment(attachment)?;
        }
        if self.mentions.len() > MAX_MENTIONS {
            return Err(FieldError::new("mentions", format!("at most {MAX_MENTIONS} mentions")));
        }
        for mention in &self.mentions {
            validate::external_id("mentions", mention)?;
        }
        let mut seen = std::collections::HashSet::new();
        self.mentions.retain(|mention| seen.insert(mention.clone()));
        for (field, part) in
            [("template", &self.template), ("interactive", &self.interactive), ("contacts", &self.contacts)]
        {
            if let Some(value) = part {
                json_part(field, value)?;
            }
        }
        json_part("metadata", &self.metadata)?;
        let require = |present: bool, field: &str| {
            if present {
                Ok(())
            } else {
                Err(FieldError::new(
                    field,
                    format!("is required for a {} message", self.message_type.as_str()),
                ))
            }
        };
        match self.message_type {
            MessageType::Text | MessageType::System => require(self.text.is_some(), "text")?,
            MessageType::Media => require(!self.attachments.is_empty(), "attachments")?,
            MessageType::Template => require(self.template.is_some(), "template")?,
            MessageType::Interactive => require(self.interactive.is_some(), "interactive")?,
            MessageType::Location => require(self.location.is_some(), "location")?,
            MessageType::Contacts => require(
                self.contacts.as_ref().is_some_and(|c| c.as_array().is_some_and(|a| !a.is_empty())),
                "contacts",
            )?,
            MessageType::Sticker => {
                if self.attachments.len() != 1 {
                    return Err(FieldError::new(
                        "attachments",
                        "a sticker message carries exactly one attachment",
                    ));
                }
            }
            MessageType::Email => {
                require(self.email.is_some(), "email")?;
                require(self.text.is_some() || !self.attachments.is_empty(), "text")?;
            }
        }
        if let Some(location) = &mut self.location {
            validate_location(location)?;
        }
        if let Some(envelope) = &mut self.email {
            validate_envelope(envelope)?;
        }
        Ok(self)
    }
}

fn json_part(field: &str, value: &impl Serialize) -> Result<(), FieldError> {
    let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_JSON_PART_BYTES {
        return Err(FieldError::new(field, format!("must serialize to at most {MAX_JSON_PART_BYTES} bytes")));
    }
    Ok(())
}

fn validate_attachment(attachment: &mut Attachment) -> Result<(), FieldError> {
    let url = attachment.url.trim();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::new(
            "attachments.url",
            "must be an http(s) URL of at most 2048 characters without spaces",
        ));
    }
    attachment.url = url.to_owned();
    attachment.name =
        validate::optional_text("attachments.name", attachment.name.as_deref(), MAX_SHORT_TEXT)?;
    attachment.mime_type =
        validate::optional_text("attachments.mime_type", attachment.mime_type.as_deref(), 127)?;
    Ok(())
}

fn validate_location(location: &mut Location) -> Result<(), FieldError> {
    if !(-90.0..=90.0).contains(&location.latitude) {
        return Err(FieldError::new("location.latitude", "must be between -90 and 90"));
    }
    if !(-180.0..=180.0).contains(&location.longitude) {
        return Err(FieldError::new("location.longitude", "must be between -180 and 180"));
    }
    location.name = validate::optional_text("location.name", location.name.as_deref(), MAX_SHORT_TEXT)?;
    location.address = validate::optional_text("location.address", location.address.as_deref(), 1024)?;
    Ok(())
}

fn validate_envelope(envelope: &mut EmailEnvelope) -> Result<(), FieldError> {
    envelope.from = validate::email("email.from", &envelope.from)?;
    if envelope.to.is_empty() {
        return Err(FieldError::new("email.to", "must name at least one recipient"));
    }
    for (field, list) in
        [("email.to", &mut envelope.to), ("email.cc", &mut envelope.cc), ("email.bcc", &mut envelope.bcc)]
    {
        if list.len() > 100 {
            return Err(FieldError::new(field, "at most 100 addresses"));
        }
        for address in list.iter_mut() {
            *address = validate::email(field, address)?;
        }
    }
    if let Some(reply_to) = envelope.reply_to.as_deref() {
        envelope.reply_to = Some(validate::email("email.reply_to", reply_to)?);
    }
    envelope.subject = validate::optional_text("email.subject", envelope.subject.as_deref(), 998)?;
    envelope.thread_id = validate::optional_text("email.thread_id", envelope.thread_id.as_deref(), 998)?;
    envelope.in_reply_to =
        validate::optional_text("email.in_reply_to", envelope.in_reply_to.as_deref(), 998)?;
    Ok(())
}

/// Checks an emoji reaction: 1 to 32 characters, no white space or control characters.
pub fn validate_emoji(emoji: &str) -> Result<String, FieldError> {
    let count = emoji.chars().count();
    if count == 0 || count > 32 || emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::new("reactions.emoji", "must be 1 to 32 characters without spaces"));
    }
    Ok(emoji.to_owned())
}

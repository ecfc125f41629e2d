//! The channels a conversation runs over and a contact prefers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A messaging channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// WhatsApp (Business API or a linked device).
    Whatsapp,
    /// Instagram direct messages.
    Instagram,
    /// SMS.
    Sms,
    /// E-mail.
    Email,
    /// A web or in-app chat widget.
    Chat,
    /// Voice calls, logged as conversations.
    Phone,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 6] =
        [Self::Whatsapp, Self::Instagram, Self::Sms, Self::Email, Self::Chat, Self::Phone];

    /// The snake_case name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Instagram => "instagram",
            Self::Sms => "sms",
            Self::Email => "email",
            Self::Chat => "chat",
            Self::Phone => "phone",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

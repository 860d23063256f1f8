//! Where each record goes: the Kafka topic of a change's `field`, and the fixed set of
//! field labels that metrics may use.
//!
//! Pure. A field that is not `[a-z0-9_]{1,100}` never becomes part of a topic name; it goes
//! to the unrouted topic, so payload text can neither forge a topic nor grow label sets.

use std::collections::BTreeMap;

/// The `object` of every WhatsApp Business Account notification.
pub const WABA_OBJECT: &str = "whatsapp_business_account";

/// The `changes[].field` values Meta documents for WhatsApp Business Accounts. Metrics label
/// these by name and every other field as `other`.
pub const KNOWN_FIELDS: &[&str] = &[
    "account_alerts",
    "account_review_update",
    "account_update",
    "automatic_events",
    "business_capability_update",
    "calls",
    "flows",
    "group_lifecycle_update",
    "group_participants_update",
    "group_settings_update",
    "group_status_update",
    "history",
    "message_template_components_update",
    "message_template_quality_update",
    "message_template_status_update",
    "messages",
    "partner_solutions",
    "payment_configuration_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "smb_app_state_sync",
    "smb_message_echoes",
    "template_category_update",
    "user_preferences",
];

/// The metric label for a field: its own name when Meta documents it, else `other`.
pub fn field_label(field: Option<&str>) -> &'static str {
    field
        .and_then(|field| KNOWN_FIELDS.iter().find(|known| **known == field))
        .copied()
        .unwrap_or("other")
}

/// True for names that may be filled into a topic template: `[a-z0-9_]{1,100}`.
pub fn is_routable_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// True for names Kafka accepts as topics: `[a-zA-Z0-9._-]{1,249}`, not `.` or `..`.
pub fn is_legal_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The kinds of item a `messages` change is split into in item mode (DESIGN §6), each
/// named after the value's array that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// An element of `value.messages`.
    Message,
    /// An element of `value.statuses`.
    Status,
    /// An element of the value's own `errors`.
    Error,
}

impl ItemKind {
    /// Every kind, in the order the arrays are read.
    pub const ALL: [ItemKind; 3] = [Self::Message, Self::Status, Self::Error];

    /// `message`, `status` or `error`: the envelope's `item_kind`, the `wa-item-kind`
    /// header and the `messages.{kind}` topic override.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Status => "status",
            Self::Error => "error",
        }
    }

    /// Its `[kafka.topics]` override key: `messages.message`, `messages.status` or
    /// `messages.error`.
    pub fn topic_key(self) -> &'static str {
        match self {
            Self::Message => "messages.message",
            Self::Status => "messages.status",
            Self::Error => "messages.error",
        }
    }

    /// The kind of the value's array `member` (`messages`, `statuses`, `errors`).
    pub fn of_array(member: &str) -> Option<Self> {
        match member {
            "messages" => Some(Self::Message),
            "statuses" => Some(Self::Status),
            "errors" => Some(Self::Error),
            _ => None,
        }
    }
}

/// `routing.split`: what one record holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitBy {
    /// One record per change.
    #[default]
    Change,
    /// One record per message, status and value-level error of a `messages` change; one
    /// per change for every other field.
    Item,
}

/// The topic layout from `[kafka]`: per-field overrides, the template, and the two fallback
/// topics; and what goes into one record (`routing.split`, `kafka.cloudevents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    template: String,
    overrides: BTreeMap<String, String>,
    unrouted: String,
    deadletter: String,
    split: SplitBy,
    cloudevents: bool,
    /// The topic of each documented field in WhatsApp Business Account notifications,
    /// worked out once: what [`Routing::topic`] answers for nearly every record.
    waba_topics: BTreeMap<&'static str, String>,
}

impl Routing {
    /// Builds the layout. `template` holds `{field}` and optionally `{object}`.
    pub fn new(
        template: impl Into<String>,
        overrides: BTreeMap<String, String>,
        unrouted: impl Into<String>,
        deadletter: impl Into<String>,
    ) -> Self {
        let mut routing = Self {
            template: template.into(),
            overrides,
            unrouted: unrouted.into(),
            deadletter: deadletter.into(),
            split: SplitBy::Change,
            cloudevents: false,
            waba_topics: BTreeMap::new(),
        };
        routing.waba_topics = KNOWN_FIELDS
            .iter()
            .map(|field| {
                (
                    *field,
                    routing.work_out_topic(Some(WABA_OBJECT), Some(field)),
                )
            })
            .collect();
        routing
    }

    /// The same layout, splitting as `split` says.
    pub fn with_split(mut self, split: SplitBy) -> Self {
        self.split = split;
        self
    }

    /// The same layout, with CloudEvents headers on every routed record when `on`.
    pub fn with_cloudevents(mut self, on: bool) -> Self {
        self.cloudevents = on;
        self
    }

    /// What one record holds.
    pub fn split(&self) -> SplitBy {
        self.split
    }

    /// Whether routed records carry CloudEvents binary-mode headers.
    pub fn cloudevents(&self) -> bool {
        self.cloudevents
    }

    /// The topic of an item of a `messages` change: the `messages.{kind}` override when
    /// set, else the topic of `messages`.
    pub fn item_topic(&self, object: Option<&str>, kind: ItemKind) -> String {
        match self.overrides.get(kind.topic_key()) {
            Some(topic) => topic.clone(),
            None => self.topic(object, Some("messages")),
        }
    }

    /// The topic of `field` in WhatsApp Business Account notifications ([`WABA_OBJECT`]).
    pub fn field_topic(&self, field: &str) -> String {
        self.topic(Some(WABA_OBJECT), Some(field))
    }

    /// The topic for a change with this `object` and `field`, or the unrouted topic when the
    /// field (or an object the template needs) is not a routable name.
    pub fn topic(&self, object: Option<&str>, field: Option<&str>) -> String {
        if object == Some(WABA_OBJECT)
            && let Some(topic) = field.and_then(|field| self.waba_topics.get(field))
        {
            return topic.clone();
        }
        self.work_out_topic(object, field)
    }

    /// [`Routing::topic`] from the template and the overrides.
    fn work_out_topic(&self, object: Option<&str>, field: Option<&str>) -> String {
        let Some(field) = field.filter(|field| is_routable_name(field)) else {
            return self.unrouted.clone();
        };
        if let Some(topic) = self.overrides.get(field) {
            return topic.clone();
        }
        if self.template.contains("{object}") {
            match object.filter(|object| is_routable_name(object)) {
                Some(object) => self
                    .template
                    .replace("{object}", object)
                    .replace("{field}", field),
                None => self.unrouted.clone(),
            }
        } else {
            self.template.replace("{field}", field)
        }
    }

    /// The topic for entries without changes and for changes without a routable field.
    pub fn unrouted(&self) -> &str {
        &self.unrouted
    }

    /// The topic for authentic bodies that are not notifications, and for records the broker
    /// refused.
    pub fn deadletter(&self) -> &str {
        &self.deadletter
    }

    /// The fields this layout knows: the documented ones and those with a topic override,
    /// sorted.
    pub fn known_fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = KNOWN_FIELDS
            .iter()
            .copied()
            .chain(
                self.overrides
                    .keys()
                    .map(String::as_str)
                    .filter(|key| !key.contains('.')),
            )
            .collect();
        fields.sort_unstable();
        fields.dedup();
        fields
    }

    /// Whether `field` is one of [`Routing::known_fields`].
    pub fn knows_field(&self, field: &str) -> bool {
        KNOWN_FIELDS.contains(&field)
            || (!field.contains('.') && self.overrides.contains_key(field))
    }

    /// Every topic this layout can name for the documented fields, plus the two fallbacks:
    /// what `tail` reads when no field is given. Only `{object}` =
    /// `whatsapp_business_account` is expanded.
    pub fn known_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = KNOWN_FIELDS
            .iter()
            .map(|field| self.field_topic(field))
            .chain(self.overrides.values().cloned())
            .chain([self.unrouted.clone(), self.deadletter.clone()])
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Problems with this layout, each a sentence naming the setting to fix.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.template.contains("{field}") {
            problems.push(format!(
                "kafka.topic_template = {:?} must contain {{field}}, e.g. \"whatsapp.{{field}}\"",
                self.template
            ));
        } else {
            let sample = self
                .template
                .replace("{object}", WABA_OBJECT)
                .replace("{field}", "messages");
            if !is_legal_topic(&sample) {
                problems.push(format!(
                    "kafka.topic_template = {:?} gives the topic {sample:?}, which Kafka refuses: \
                     use only letters, digits, '.', '_' and '-' (at most 249)",
                    self.template
                ));
            }
        }
        for (name, topic) in [
            ("kafka.unrouted_topic", &self.unrouted),
            ("kafka.deadletter_topic", &self.deadletter),
        ] {
            if !is_legal_topic(topic) {
                problems.push(format!(
                    "{name} = {topic:?} is not a legal Kafka topic name: use only letters, \
                     digits, '.', '_' and '-' (at most 249)"
                ));
            }
        }
        for (field, topic) in &self.overrides {
            match field.split_once('.') {
                Some(_) if ItemKind::ALL.iter().any(|k| k.topic_key() == field) => {}
                Some(_) => problems.push(format!(
                    "kafka.topics.\"{field}\": only the items of messages have their own \
                     topics: use \"messages.message\", \"messages.status\" or \"messages.error\""
                )),
                None if !is_routable_name(field) => problems.push(format!(
                    "kafka.topics.{field}: {field:?} is not a field name ([a-z0-9_]{{1,100}})"
                )),
                None => {}
            }
            if !is_legal_topic(topic) {
                problems.push(format!(
                    "kafka.topics.{field} = {topic:?} is not a legal Kafka topic name"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing::new(
            "whatsapp.{field}",
            BTreeMap::from([("messages".to_owned(), "wa.inbound".to_owned())]),
            "whatsapp.unrouted",
            "whatsapp.deadletter",
        )
    }

    #[test]
    fn a_field_fills_the_template() {
        assert_eq!(
            routing().topic(None, Some("account_update")),
            "whatsapp.account_update"
        );
    }

    #[test]
    fn a_per_field_override_wins_over_the_template() {
        assert_eq!(routing().topic(None, Some("messages")), "wa.inbound");
    }

    #[test]
    fn a_field_that_is_not_a_routable_name_goes_to_the_unrouted_topic() {
        for field in [
            None,
            Some(""),
            Some("Messages"),
            Some("a.b"),
            Some("x/../../y"),
            Some("messages "),
        ] {
            assert_eq!(
                routing().topic(None, field),
                "whatsapp.unrouted",
                "{field:?}"
            );
        }
        let long = "a".repeat(101);
        assert_eq!(routing().topic(None, Some(&long)), "whatsapp.unrouted");
        assert_eq!(
            routing().topic(None, Some(&long[..100])),
            format!("whatsapp.{}", &long[..100])
        );
    }

    #[test]
    fn each_documented_field_of_a_waba_notification_has_its_template_or_override_topic() {
        for (template, prefix) in [
            ("whatsapp.{field}", "whatsapp."),
            ("wa.{object}.{field}", "wa.whatsapp_business_account."),
        ] {
            let overrides = BTreeMap::from([("messages".to_owned(), "wa.inbound".to_owned())]);
            let routing = Routing::new(template, overrides, "u", "d");
            for field in KNOWN_FIELDS {
                let topic = match *field {
                    "messages" => "wa.inbound".to_owned(),
                    _ => format!("{prefix}{field}"),
                };
                assert_eq!(routing.topic(Some(WABA_OBJECT), Some(field)), topic);
            }
            assert_eq!(
                routing.topic(Some(WABA_OBJECT), Some("not_documented")),
                format!("{prefix}not_documented")
            );
        }
    }

    #[test]
    fn an_object_template_needs_a_routable_object() {
        let routing = Routing::new("wa.{object}.{field}", BTreeMap::new(), "u", "d");
        assert_eq!(
            routing.topic(Some("whatsapp_business_account"), Some("messages")),
            "wa.whatsapp_business_account.messages"
        );
        assert_eq!(routing.topic(None, Some("messages")), "u");
        assert_eq!(routing.topic(Some("Page"), Some("messages")), "u");
    }

    #[test]
    fn unknown_fields_are_labelled_other() {
        assert_eq!(field_label(Some("messages")), "messages");
        assert_eq!(field_label(Some("brand_new_field")), "other");
        assert_eq!(field_label(None), "other");
    }

    #[test]
    fn problems_name_each_bad_setting() {
        let bad = Routing::new(
            "whatsapp:{field}",
            BTreeMap::from([("Bad Field".to_owned(), "ok".to_owned())]),
            "",
            "dead letter",
        );
        let problems = bad.problems().join("\n");
        assert!(problems.contains("kafka.topic_template"), "{problems}");
        assert!(problems.contains("kafka.unrouted_topic"), "{problems}");
        assert!(problems.contains("kafka.deadletter_topic"), "{problems}");
        assert!(problems.contains("kafka.topics.Bad Field"), "{problems}");
        assert!(routing().problems().is_empty());
        assert!(
            Routing::new("whatsapp", BTreeMap::new(), "u", "d").problems()[0]
                .contains("must contain {field}")
        );
    }

    #[test]
    fn known_topics_cover_every_field_and_both_fallbacks() {
        let topics = routing().known_topics();
        assert!(topics.contains(&"wa.inbound".to_owned()));
        assert!(topics.contains(&"whatsapp.security".to_owned()));
        assert!(topics.contains(&"whatsapp.unrouted".to_owned()));
        assert!(topics.contains(&"whatsapp.deadletter".to_owned()));
        assert!(!topics.contains(&"whatsapp.messages".to_owned()));
    }
}

//! Email templates as stored (`email_templates`): the text of each template, keyed by report type
//! (or `*`) and locale. The store keeps text only; whether a template compiles is checked before it
//! is stored (`runtime::templates`), and again when it is loaded into the EMAIL sink at start.

/// One stored template: its key and its three parts, exactly as set over the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailTemplateRecord {
    /// A report type such as `PERFORMANCE_REPORT`, or `*` for every type.
    pub report_type: String,
    pub locale: String,
    pub subject: String,
    pub html: String,
    pub text: String,
}

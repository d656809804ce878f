//! Subject, HTML and plain-text templates per report type and locale, rendered with minijinja.
//!
//! The service manages templates at runtime (over REST), so the store is shared and replaceable:
//! readers take a snapshot (one `Arc` clone under a read lock) and render without holding any lock;
//! a change builds a new snapshot and swaps it in. Changes are rare, renders are per delivery.
//!
//! Lookup falls back, for report type `T` and locale `L` (the subscriber's, or the default locale
//! `D` when they have none): `(T, L)` → `(T, D)` → `("*", L)` → `("*", D)` → the built-in template,
//! so every report renders even when nobody has configured a template.
//!
//! Templates are checked when they are set (compiled, then rendered against a sample report to find
//! unknown filters and functions), so a broken one is refused up front with the part (subject /
//! html / text) and minijinja's error, rather than failing deliveries later. A template can still
//! fail on a real payload (arithmetic on a value of the wrong type); that is a permanent delivery
//! failure naming the template.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// The report type of templates that apply to every report type.
pub const ANY_REPORT_TYPE: &str = "*";

/// The report type of digest templates (a SCHEDULED subscription's reports of one tick in one
/// message). A digest is looked up as `(DIGEST, L)` → `(DIGEST, D)` → the built-in digest template:
/// never a `*` template, which is written for a single report.
pub const DIGEST_TEMPLATE: &str = "DIGEST";

/// The three parts of a message's text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailTemplate {
    /// One line; whitespace (newlines included) is collapsed to single spaces after rendering.
    pub subject: String,
    /// Autoescaped: values inserted with `{{ }}` are HTML-escaped unless marked `| safe`.
    pub html: String,
    pub text: String,
}

/// Which part of a template an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    Subject,
    Html,
    Text,
}

impl TemplatePart {
    const ALL: [TemplatePart; 3] = [TemplatePart::Subject, TemplatePart::Html, TemplatePart::Text];

    pub fn as_str(self) -> &'static str {
        match self {
            TemplatePart::Subject => "subject",
            TemplatePart::Html => "html",
            TemplatePart::Text => "text",
        }
    }

    /// The file-like suffix of the part's name in the environment. `.html` turns on HTML
    /// autoescaping (minijinja's default rule); the other two are not escaped.
    fn suffix(self) -> &'static str {
        match self {
            TemplatePart::Subject => "subject.txt",
            TemplatePart::Html => "body.html",
            TemplatePart::Text => "body.txt",
        }
    }

    fn source(self, template: &EmailTemplate) -> &str {
        match self {
            TemplatePart::Subject => &template.subject,
            TemplatePart::Html => &template.html,
            TemplatePart::Text => &template.text,
        }
    }
}

impl fmt::Display for TemplatePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A template's key: a report type (or [`ANY_REPORT_TYPE`]) and a locale such as `en` or `de-AT`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TemplateKey {
    pub report_type: String,
    pub locale: String,
}

impl TemplateKey {
    pub fn new(report_type: impl Into<String>, locale: impl Into<String>) -> Self {
        TemplateKey { report_type: report_type.into(), locale: locale.into() }
    }

    /// Keys become template names, so they are restricted to characters that cannot make two keys
    /// collide: letters, digits, `_`, `-`, `.` (and `*` alone as the report type).
    fn check(&self) -> Result<(), TemplateError> {
        let valid = |s: &str| {
            !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        if !(self.report_type == ANY_REPORT_TYPE || valid(&self.report_type)) || !valid(&self.locale) {
            return Err(TemplateError::InvalidKey { key: self.to_string() });
        }
        Ok(())
    }

    fn name(&self, part: TemplatePart) -> String {
        format!("{}/{}/{}", self.report_type, self.locale, part.suffix())
    }
}

impl fmt::Display for TemplateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.report_type, self.locale)
    }
}

/// Why a template was refused or failed to render.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid template key {key:?}: report type and locale must be non-empty letters, digits, '_', '-' or '.' (report type may be \"*\")")]
    InvalidKey { key: String },
    #[error("template {key} ({part}) is invalid: {message}")]
    Invalid { key: String, part: TemplatePart, message: String },
    #[error("template {key} ({part}) failed to render: {message}")]
    Render { key: String, part: TemplatePart, message: String },
}

/// A rendered message text, and which template produced it (for delivery history and errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedEmail {
    /// `type/locale` of the template used, or `builtin`.
    pub template: String,
    pub subject: String,
    pub html: String,
    pub text: String,
}

const BUILTIN: &str = "builtin";
const BUILTIN_DIGEST: &str = "builtin-digest";

/// The template used when no configured one matches. English, and careful to render whatever the
/// report carries: every field is optional.
pub fn builtin_template() -> EmailTemplate {
    EmailTemplate {
        subject: include_str!("builtin/subject.txt").to_string(),
        html: include_str!("builtin/body.html").to_string(),
        text: include_str!("builtin/body.txt").to_string(),
    }
}

/// The template used for a digest when no `DIGEST` template matches: every report's title, type,
/// portfolio, period and file, in a list. Sees `reports`, `report_count`, `tick`, `delivery_id`...
/// (see `message::digest_context`).
pub fn builtin_digest_template() -> EmailTemplate {
    EmailTemplate {
        subject: include_str!("builtin/digest_subject.txt").to_string(),
        html: include_str!("builtin/digest_body.html").to_string(),
        text: include_str!("builtin/digest_body.txt").to_string(),
    }
}

fn builtin_digest_name(part: TemplatePart) -> String {
    format!("@{BUILTIN_DIGEST}/{}", part.suffix())
}

/// One immutable generation of the store: the sources and the environment compiled from them.
#[derive(Clone)]
struct Snapshot {
    env: Environment<'static>,
    sources: BTreeMap<TemplateKey, EmailTemplate>,
}

/// The shared, runtime-replaceable set of templates. See the module docs for the lookup order.
pub struct TemplateStore {
    default_locale: String,
    current: RwLock<Arc<Snapshot>>,
}

impl fmt::Debug for TemplateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.snapshot().sources.keys().map(ToString::to_string).collect();
        f.debug_struct("TemplateStore").field("default_locale", &self.default_locale).field("templates", &keys).finish()
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `report.title` when the report has no title renders as nothing instead of failing: payload
    // fields are optional, and a template should not break on a report that lacks one.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.add_filter("filesize", filesize);
    env
}

/// `{{ report.file_size_bytes | filesize }}` → `2.4 MB` (decimal units, as mail clients show sizes).
fn filesize(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn builtin_name(part: TemplatePart) -> String {
    // '@' cannot occur in a key, so this never collides with a configured template.
    format!("@{BUILTIN}/{}", part.suffix())
}

/// Adds `template`'s three parts under `names`, naming the part that does not compile.
fn add_parts(
    env: &mut Environment<'static>,
    label: &str,
    names: impl Fn(TemplatePart) -> String,
    template: &EmailTemplate,
) -> Result<(), TemplateError> {
    for part in TemplatePart::ALL {
        env.add_template_owned(names(part), part.source(template).to_string()).map_err(|e| TemplateError::Invalid {
            key: label.to_string(),
            part,
            message: e.to_string(),
        })?;
    }
    Ok(())
}

impl TemplateStore {
    /// A store holding only the built-in template. `default_locale` is the second choice of the
    /// lookup (see the module docs).
    pub fn new(default_locale: impl Into<String>) -> Self {
        let mut env = environment();
        add_parts(&mut env, BUILTIN, builtin_name, &builtin_template()).expect("the built-in template compiles");
        add_parts(&mut env, BUILTIN_DIGEST, builtin_digest_name, &builtin_digest_template())
            .expect("the built-in digest template compiles");
        let snapshot = Snapshot { env, sources: BTreeMap::new() };
        TemplateStore { default_locale: default_locale.into(), current: RwLock::new(Arc::new(snapshot)) }
    }

    pub fn default_locale(&self) -> &str {
        &self.default_locale
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        // A poisoned lock still holds a consistent snapshot: the swap is one assignment.
        Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Whether `set(key, template)` would accept it: the key is well formed and every part compiles
    /// and renders against a sample report. Changes nothing; lets a caller refuse a template before
    /// storing it elsewhere (the service's database).
    pub fn check(&self, key: &TemplateKey, template: &EmailTemplate) -> Result<(), TemplateError> {
        key.check()?;
        let label = key.to_string();
        let mut scratch = environment();
        add_parts(&mut scratch, &label, |part| key.name(part), template)?;
        trial_render(&scratch, &label, |part| key.name(part))
    }

    /// Adds or replaces the template for `key`, after [`TemplateStore::check`]. On error the store
    /// is unchanged.
    pub fn set(&self, key: TemplateKey, template: EmailTemplate) -> Result<(), TemplateError> {
        // Checked on a scratch environment first, so a refused template never reaches the store.
        self.check(&key, &template)?;
        let label = key.to_string();

        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Snapshot::clone(&current);
        add_parts(&mut next.env, &label, |part| key.name(part), &template)?;
        next.sources.insert(key, template);
        *current = Arc::new(next);
        Ok(())
    }

    /// Removes the template for `key`, returning it if there was one.
    pub fn remove(&self, key: &TemplateKey) -> Option<EmailTemplate> {
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !current.sources.contains_key(key) {
            return None;
        }
        let mut next = Snapshot::clone(&current);
        for part in TemplatePart::ALL {
            next.env.remove_template(&key.name(part));
        }
        let removed = next.sources.remove(key);
        *current = Arc::new(next);
        removed
    }

    pub fn get(&self, key: &TemplateKey) -> Option<EmailTemplate> {
        self.snapshot().sources.get(key).cloned()
    }

    /// Every configured template (not the built-in one), sorted by key.
    pub fn list(&self) -> Vec<(TemplateKey, EmailTemplate)> {
        self.snapshot().sources.iter().map(|(k, t)| (k.clone(), t.clone())).collect()
    }

    /// The key whose template renders `report_type` for `locale`, or `None` for the built-in one.
    pub fn resolve(&self, report_type: &str, locale: Option<&str>) -> Option<TemplateKey> {
        self.resolve_in(&self.snapshot(), report_type, locale)
    }

    fn resolve_in(&self, snapshot: &Snapshot, report_type: &str, locale: Option<&str>) -> Option<TemplateKey> {
        let default = self.default_locale.as_str();
        let locale = locale.map(str::trim).filter(|l| !l.is_empty()).unwrap_or(default);
        let candidates =
            [(report_type, locale), (report_type, default), (ANY_REPORT_TYPE, locale), (ANY_REPORT_TYPE, default)];
        candidates.into_iter().map(|(t, l)| TemplateKey::new(t, l)).find(|key| snapshot.sources.contains_key(key))
    }

    /// Renders a digest with the `DIGEST` template for `locale` (or the default locale), else the
    /// built-in digest template.
    pub fn render_digest(&self, locale: Option<&str>, context: &serde_json::Value) -> Result<RenderedEmail, TemplateError> {
        let snapshot = self.snapshot();
        let default = self.default_locale.as_str();
        let locale = locale.map(str::trim).filter(|l| !l.is_empty()).unwrap_or(default);
        let key = [locale, default]
            .into_iter()
            .map(|l| TemplateKey::new(DIGEST_TEMPLATE, l))
            .find(|key| snapshot.sources.contains_key(key));
        match key {
            Some(key) => render_with(&snapshot.env, &key.to_string(), |part| key.name(part), context),
            None => render_with(&snapshot.env, BUILTIN_DIGEST, builtin_digest_name, context),
        }
    }

    /// Renders the template chosen for `report_type` and `locale` with `context`. The subject is
    /// rendered first and is available to the bodies as `subject`.
    pub fn render(
        &self,
        report_type: &str,
        locale: Option<&str>,
        context: &serde_json::Value,
    ) -> Result<RenderedEmail, TemplateError> {
        let snapshot = self.snapshot();
        match self.resolve_in(&snapshot, report_type, locale) {
            Some(key) => render_with(&snapshot.env, &key.to_string(), |part| key.name(part), context),
            None => render_with(&snapshot.env, BUILTIN, builtin_name, context),
        }
    }
}

fn render_with(
    env: &Environment<'static>,
    label: &str,
    names: impl Fn(TemplatePart) -> String,
    context: &serde_json::Value,
) -> Result<RenderedEmail, TemplateError> {
    let render = |part: TemplatePart, context: &minijinja::Value| {
        env.get_template(&names(part)).and_then(|t| t.render(context)).map_err(|e| TemplateError::Render {
            key: label.to_string(),
            part,
            message: e.to_string(),
        })
    };
    let mut context = minijinja::Value::from_serialize(context);
    let subject = render(TemplatePart::Subject, &context)?;
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    context = minijinja::context! { subject => subject.clone(), ..context };
    let html = render(TemplatePart::Html, &context)?;
    let text = render(TemplatePart::Text, &context)?;
    Ok(RenderedEmail { template: label.to_string(), subject, html, text })
}

/// Renders each part against [`sample_context`] and refuses what fails the same way on any data:
/// an unknown filter, test, function or method, a missing include, wrong argument counts. Errors
/// that depend on the data (an operation on a value of the wrong type) are not held against the
/// template, since it may be written for another context, a digest's for instance.
fn trial_render(
    env: &Environment<'static>,
    label: &str,
    names: impl Fn(TemplatePart) -> String,
) -> Result<(), TemplateError> {
    use minijinja::ErrorKind::*;
    let context =
        minijinja::context! { subject => "Sample report", ..minijinja::Value::from_serialize(sample_context()) };
    for part in TemplatePart::ALL {
        let result = env.get_template(&names(part)).and_then(|t| t.render(&context));
        if let Err(error) = result {
            let refuse = matches!(
                error.kind(),
                UnknownFilter
                    | UnknownTest
                    | UnknownFunction
                    | UnknownMethod
                    | UnknownBlock
                    | TemplateNotFound
                    | BadInclude
                    | TooManyArguments
                    | MissingArgument
            );
            if refuse {
                return Err(TemplateError::Invalid { key: label.to_string(), part, message: error.to_string() });
            }
        }
    }
    Ok(())
}

/// A context shaped like a real delivery's, for checking templates when they are set.
pub fn sample_context() -> serde_json::Value {
    let payload = serde_json::json!({
        "type": "report.distributed",
        "timestamp": "2025-06-21T08:00:00Z",
        "data": {
            "delivery_id": "dlv_sample",
            "subscription_id": "sub_sample",
            "subscriber_id": "subscriber_sample",
            "channel": "EMAIL",
            "attempt": 1,
            "report": {
                "event_id": "evt_sample",
                "timestamp": "2025-06-21T08:00:00Z",
                "data_type": "PERFORMANCE",
                "report_data": {
                    "report_id": "report_sample",
                    "report_type": "PERFORMANCE",
                    "portfolio_id": "portfolio_0001",
                    "report_period": "2025-06",
                    "file_path": "/reports/sample.pdf",
                    "file_size_bytes": 123456,
                    "title": "Sample report"
                },
                "routing": {"topic": "reports", "routing_key": "portfolio_0001.performance.monthly", "priority": 1},
                "metadata": {"source_service": "sample", "delivery_priority": 1}
            }
        }
    });
    let mut context =
        crate::email::message::TemplateContext::from_payload(&payload).expect("the sample payload is an object");
    context.set_attachment_name("sample.pdf");
    context.into_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(tag: &str) -> EmailTemplate {
        EmailTemplate {
            subject: format!("{tag} {{{{ report.report_id }}}}"),
            html: format!("<p>{tag} {{{{ report.title }}}}</p>"),
            text: format!("{tag} {{{{ report.title }}}}"),
        }
    }

    fn store_with(keys: &[(&str, &str)]) -> TemplateStore {
        let store = TemplateStore::new("en");
        for (t, l) in keys {
            store.set(TemplateKey::new(*t, *l), template(&format!("{t}/{l}"))).expect("valid template");
        }
        store
    }

    fn used(store: &TemplateStore, report_type: &str, locale: Option<&str>) -> String {
        store.render(report_type, locale, &sample_context()).expect("renders").template
    }

    #[test]
    fn lookup_falls_back_type_then_default_locale_then_any_type_then_builtin() {
        let store = store_with(&[("PERFORMANCE", "de"), ("PERFORMANCE", "en"), ("*", "fr"), ("*", "en")]);
        assert_eq!(used(&store, "PERFORMANCE", Some("de")), "PERFORMANCE/de");
        assert_eq!(used(&store, "PERFORMANCE", Some("fr")), "PERFORMANCE/en", "type beats locale");
        assert_eq!(used(&store, "PERFORMANCE", None), "PERFORMANCE/en");
        assert_eq!(used(&store, "RISK", Some("fr")), "*/fr");
        assert_eq!(used(&store, "RISK", Some("it")), "*/en");

        assert!(store.remove(&TemplateKey::new("*", "en")).is_some());
        assert_eq!(used(&store, "RISK", Some("it")), "builtin");
        assert_eq!(used(&TemplateStore::new("en"), "RISK", Some("it")), "builtin");
    }

    #[test]
    fn the_rendered_text_comes_from_the_chosen_template() {
        let store = store_with(&[("PERFORMANCE", "de")]);
        let rendered = store.render("PERFORMANCE", Some("de"), &sample_context()).expect("renders");
        assert_eq!(rendered.subject, "PERFORMANCE/de report_sample");
        assert_eq!(rendered.html, "<p>PERFORMANCE/de Sample report</p>");
        assert_eq!(rendered.text, "PERFORMANCE/de Sample report");
    }

    #[test]
    fn the_builtin_template_renders_a_sensible_message() {
        let rendered = TemplateStore::new("en").render("ANY", None, &sample_context()).expect("renders");
        assert_eq!(rendered.subject, "Sample report – portfolio_0001 (2025-06)");
        for body in [&rendered.html, &rendered.text] {
            for expected in ["report_sample", "PERFORMANCE", "portfolio_0001", "2025-06", "sample.pdf", "dlv_sample"] {
                assert!(body.contains(expected), "{expected} missing from {body}");
            }
        }
        assert!(rendered.html.contains("<html"), "{}", rendered.html);
    }

    #[test]
    fn the_builtin_template_survives_an_empty_report() {
        let context = crate::email::message::TemplateContext::from_payload(&serde_json::json!({})).expect("object");
        let rendered = TemplateStore::new("en").render("X", None, &context.into_value()).expect("renders");
        assert_eq!(rendered.subject, "Report");
    }

    #[test]
    fn html_is_autoescaped_but_text_and_subject_are_not() {
        let store = store_with(&[]);
        let mut context = sample_context();
        context["report"]["title"] = serde_json::json!("<b>R&D</b>");
        store
            .set(
                TemplateKey::new("*", "en"),
                EmailTemplate {
                    subject: "{{ report.title }}".into(),
                    html: "{{ report.title }}".into(),
                    text: "{{ report.title }}".into(),
                },
            )
            .expect("valid");
        let rendered = store.render("X", None, &context).expect("renders");
        assert_eq!(rendered.subject, "<b>R&D</b>");
        assert_eq!(rendered.text, "<b>R&D</b>");
        assert!(rendered.html.starts_with("&lt;b&gt;R&amp;D&lt;"), "{}", rendered.html);
    }

    #[test]
    fn a_broken_template_is_refused_naming_the_part_and_the_store_is_unchanged() {
        let store = store_with(&[("PERFORMANCE", "en")]);
        let key = TemplateKey::new("PERFORMANCE", "en");
        let before = store.get(&key);
        for (part, broken) in [
            (TemplatePart::Subject, EmailTemplate { subject: "{{ report.id ".into(), ..template("x") }),
            (TemplatePart::Html, EmailTemplate { html: "{% if %}".into(), ..template("x") }),
            (TemplatePart::Text, EmailTemplate { text: "{{ report.title | no_such_filter }}".into(), ..template("x") }),
        ] {
            let error = store.set(key.clone(), broken).expect_err("refused");
            let TemplateError::Invalid { key: k, part: p, message } = &error else { panic!("{error:?}") };
            assert_eq!((k.as_str(), *p), ("PERFORMANCE/en", part), "{error}");
            assert!(!message.is_empty());
            assert!(error.to_string().contains(part.as_str()), "{error}");
        }
        assert_eq!(store.get(&key), before);
    }

    #[test]
    fn keys_are_checked() {
        let store = TemplateStore::new("en");
        for (t, l) in [("", "en"), ("A/B", "en"), ("A", "e n"), ("A", ""), ("**", "en")] {
            let error = store.set(TemplateKey::new(t, l), template("x")).expect_err("bad key");
            assert!(matches!(error, TemplateError::InvalidKey { .. }), "{t}/{l}: {error}");
        }
        assert!(store.list().is_empty());
    }

    #[test]
    fn set_get_list_remove() {
        let store = store_with(&[("B", "en"), ("A", "de")]);
        let keys: Vec<String> = store.list().into_iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["A/de", "B/en"]);
        store.set(TemplateKey::new("A", "de"), template("new")).expect("replace");
        assert_eq!(store.get(&TemplateKey::new("A", "de")), Some(template("new")));
        assert_eq!(store.remove(&TemplateKey::new("A", "de")), Some(template("new")));
        assert_eq!(store.remove(&TemplateKey::new("A", "de")), None);
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn a_runtime_failure_names_the_template() {
        let store = TemplateStore::new("en");
        // Renders on the sample (a number), fails on a report whose size is a string.
        store
            .set(
                TemplateKey::new("*", "en"),
                EmailTemplate { text: "{{ report.file_size_bytes + 1 }}".into(), ..template("x") },
            )
            .expect("valid on the sample");
        let mut context = sample_context();
        context["report"]["file_size_bytes"] = serde_json::json!("big");
        let error = store.render("X", None, &context).expect_err("fails");
        let TemplateError::Render { key, part, .. } = &error else { panic!("{error:?}") };
        assert_eq!((key.as_str(), *part), ("*/en", TemplatePart::Text));
    }

    #[test]
    fn filesize_is_human_readable() {
        assert_eq!(filesize(999.0), "999 bytes");
        assert_eq!(filesize(2_400_000.0), "2.4 MB");
        assert_eq!(filesize(10.0 * 1024.0 * 1024.0), "10.5 MB");
    }
}

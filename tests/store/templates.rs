//! `email_templates`: stored, replaced, listed in key order, deleted, kept across a reopen.

use repdist::store::EmailTemplateRecord;

use crate::backend::Backend;

fn template(report_type: &str, locale: &str, tag: &str) -> EmailTemplateRecord {
    EmailTemplateRecord {
        report_type: report_type.to_string(),
        locale: locale.to_string(),
        subject: format!("{tag} {{{{ report.report_id }}}}"),
        // Markup, quotes, non-ASCII and a newline: stored and read back byte for byte.
        html: format!("<p class=\"x\">{tag} – {{{{ report.title }}}}</p>\n{{% if report.title %}}ü{{% endif %}}"),
        text: format!("{tag}\r\n{{{{ report.title }}}}"),
    }
}

fn keys(templates: &[EmailTemplateRecord]) -> Vec<String> {
    templates.iter().map(|t| format!("{}/{}", t.report_type, t.locale)).collect()
}

pub async fn email_templates_crud(backend: &dyn Backend) {
    let store = backend.open().await;
    assert!(store.email_templates().await.unwrap().is_empty());

    let perf_de = template("PERFORMANCE_REPORT", "de", "one");
    for record in [&perf_de, &template("*", "en", "any"), &template("PERFORMANCE_REPORT", "de-AT", "at"), &template("ALERT", "en", "alert")] {
        store.put_email_template(record).await.unwrap();
    }
    let listed = store.email_templates().await.unwrap();
    // Byte order on both backends: '*' < 'A' < 'P', "de" < "de-AT".
    assert_eq!(keys(&listed), ["*/en", "ALERT/en", "PERFORMANCE_REPORT/de", "PERFORMANCE_REPORT/de-AT"]);
    assert_eq!(listed[2], perf_de, "the text exactly");

    let replaced = template("PERFORMANCE_REPORT", "de", "two");
    store.put_email_template(&replaced).await.unwrap();
    let listed = store.email_templates().await.unwrap();
    assert_eq!(listed.len(), 4, "a put on an existing key replaces it");
    assert_eq!(listed[2], replaced);

    assert!(store.delete_email_template("ALERT", "en").await.unwrap());
    assert!(!store.delete_email_template("ALERT", "en").await.unwrap(), "deleting twice finds nothing");
    assert!(!store.delete_email_template("PERFORMANCE_REPORT", "fr").await.unwrap());

    drop(store);
    let store = backend.open().await;
    let kept = store.email_templates().await.unwrap();
    assert_eq!(keys(&kept), ["*/en", "PERFORMANCE_REPORT/de", "PERFORMANCE_REPORT/de-AT"], "kept across reopen");
    assert_eq!(kept[1], replaced);
}

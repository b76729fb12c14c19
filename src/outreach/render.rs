//! Messages in the customer's language: Fluent templates (`locales/<lang>/outreach.ftl`,
//! compiled in), with plural forms by each language's rules and dates and times in the
//! customer's time zone. A message is a greeting, the type's `.body`, what was noticed and
//! when a failure is expected (where known), how to answer (where the customer can), and
//! the signature; as plain text and as HTML.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use unic_langid::LanguageIdentifier;

use super::links::LinkAction;

/// The languages messages are written in, with their templates. The first is the fallback
/// for a customer whose language has none.
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", include_str!("../../locales/en/outreach.ftl")),
    ("pl", include_str!("../../locales/pl/outreach.ftl")),
    ("uk", include_str!("../../locales/uk/outreach.ftl")),
    ("sk", include_str!("../../locales/sk/outreach.ftl")),
];

/// Message types with a template (the outbox's `message_type`).
pub const MESSAGE_TYPES: &[&str] = &[
    "proactive_notice",
    "booking_proposed",
    "booking_confirmed",
    "technician_en_route",
    "rescheduled",
    "incident_notice",
    "resolved",
    "cancelled",
];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("locales/{language}/outreach.ftl does not parse: {detail}")]
    Parse { language: String, detail: String },
    #[error("no template {message} in {language}")]
    Missing { language: String, message: String },
    /// A fact the template needs is not in the message (a proposal without its slot).
    #[error("{language} {message}: {detail}")]
    Format {
        language: String,
        message: String,
        detail: String,
    },
}

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The language it was written in (the customer's, or the fallback).
    pub language: &'static str,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What a message is rendered from: the outbox row's facts and its customer.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub message_type: &'a str,
    pub language: &'a str,
    pub time_zone: Tz,
    pub customer_name: &'a str,
    pub payload: &'a serde_json::Value,
    /// Threads an answer onto its ticket.
    pub reference: &'a str,
    pub now: DateTime<Utc>,
    /// The signed links of the answers the message offers (none: the customer answers by
    /// replying).
    pub links: &'a [(LinkAction, String)],
}

/// The compiled templates of every language.
pub struct Templates {
    bundles: HashMap<&'static str, FluentBundle<FluentResource>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("languages", &self.bundles.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Templates {
    /// Parses every language's templates.
    pub fn load() -> Result<Templates, RenderError> {
        let mut bundles = HashMap::new();
        for (language, source) in LANGUAGES {
            let resource = FluentResource::try_new(source.to_string()).map_err(|(_, errors)| {
                RenderError::Parse {
                    language: language.to_string(),
                    detail: format!("{errors:?}"),
                }
            })?;
            let id: LanguageIdentifier = language.parse().map_err(|_| RenderError::Parse {
                language: language.to_string(),
                detail: "not a language identifier".to_string(),
            })?;
            let mut bundle = FluentBundle::new_concurrent(vec![id]);
            // Plain text and email: no Unicode isolation marks around placeholders.
            bundle.set_use_isolating(false);
            bundle
                .add_resource(resource)
                .map_err(|errors| RenderError::Parse {
                    language: language.to_string(),
                    detail: format!("{errors:?}"),
                })?;
            bundles.insert(*language, bundle);
        }
        Ok(Templates { bundles })
    }

    /// The language a customer's (BCP 47) tag is written in: `pl-PL` → `pl`; one with no
    /// templates → English.
    pub fn language_of(&self, tag: &str) -> &'static str {
        ours(tag).unwrap_or(LANGUAGES[0].0)
    }

    /// The first of our languages an `Accept-Language` header names (weights ignored:
    /// browsers list languages in order of preference), else the fallback.
    pub fn language_accepted(&self, header: &str) -> &'static str {
        header
            .split(',')
            .filter(|part| {
                // `q=0` says "not this one".
                let q = part
                    .split(';')
                    .skip(1)
                    .find_map(|p| p.trim().strip_prefix("q="));
                q.is_none_or(|q| q.trim().parse::<f32>().map_or(true, |q| q > 0.0))
            })
            .filter_map(|part| part.split(';').next())
            .find_map(|tag| ours(tag.trim()))
            .unwrap_or(LANGUAGES[0].0)
    }

    /// One template (a link page's text) in `language`, with string variables.
    pub fn text(
        &self,
        language: &str,
        id: &str,
        vars: &[(&str, String)],
    ) -> Result<String, RenderError> {
        let language = self.language_of(language);
        let bundle = &self.bundles[language];
        let missing = || RenderError::Missing {
            language: language.to_string(),
            message: id.to_string(),
        };
        let pattern = bundle
            .get_message(id)
            .and_then(|m| m.value())
            .ok_or_else(missing)?;
        let mut args = FluentArgs::new();
        for (name, value) in vars {
            args.set(*name, value.clone());
        }
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, Some(&args), &mut errors);
        if !errors.is_empty() {
            return Err(RenderError::Format {
                language: language.to_string(),
                message: id.to_string(),
                detail: format!("{errors:?}"),
            });
        }
        Ok(text.into_owned())
    }

    /// A visit's time in `language`'s words, in `zone`.
    pub fn slot_text(
        &self,
        language: &str,
        zone: Tz,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<String, RenderError> {
        let language = self.language_of(language);
        slot(&self.bundles[language], zone, start, end).map_err(|detail| RenderError::Format {
            language: language.to_string(),
            message: "slot".to_string(),
            detail,
        })
    }

    /// Renders one message. Fails, naming what is missing, when the template needs a fact
    /// the message does not carry or a placeholder stays unformatted.
    pub fn render(&self, facts: &Facts<'_>) -> Result<Rendered, RenderError> {
        let language = self.language_of(facts.language);
        let bundle = &self.bundles[language];
        let fail = |detail: String| RenderError::Format {
            language: language.to_string(),
            message: facts.message_type.to_string(),
            detail,
        };
        let args = self.arguments(bundle, facts).map_err(&fail)?;
        let format = |id: &str, attribute: Option<&str>| -> Result<String, RenderError> {
            let message = bundle.get_message(id).ok_or_else(|| RenderError::Missing {
                language: language.to_string(),
                message: id.to_string(),
            })?;
            let pattern = match attribute {
                Some(name) => message.get_attribute(name).map(|a| a.value()),
                None => message.value(),
            }
            .ok_or_else(|| RenderError::Missing {
                language: language.to_string(),
                message: format!("{id}.{}", attribute.unwrap_or("")),
            })?;
            let mut errors = Vec::new();
            let text = bundle.format_pattern(pattern, Some(&args), &mut errors);
            if !errors.is_empty() {
                return Err(fail(format!("{id}: {errors:?}")));
            }
            Ok(text.into_owned())
        };
        let subject = format(facts.message_type, Some("subject"))?;
        let mut paragraphs = vec![if facts.customer_name.trim().is_empty() {
            format("greeting-anonymous", None)?
        } else {
            format("greeting", None)?
        }];
        let mut body = format(facts.message_type, Some("body"))?;
        let predicts = matches!(facts.message_type, "proactive_notice" | "booking_proposed");
        if predicts && args.get("trend").is_some() {
            body = format!("{body} {}", format("symptom", None)?);
        }
        if predicts && args.get("days").is_some() {
            body = format!("{body} {}", format("when-failure", None)?);
        }
        paragraphs.push(body);
        let mut links = Vec::new();
        if facts.links.is_empty() {
            if matches!(facts.message_type, "booking_proposed" | "rescheduled") {
                paragraphs.push(format("answer", None)?);
            }
        } else {
            paragraphs.push(format("answer-links", None)?);
            for (action, url) in facts.links {
                links.push((
                    format(&format!("link-{}", action.as_str()), None)?,
                    url.as_str(),
                ));
            }
        }
        let signature = format("signature", None)?;
        let mut text = paragraphs.join("\n\n");
        if !links.is_empty() {
            text.push_str("\n\n");
            let lines: Vec<String> = links
                .iter()
                .map(|(label, url)| format!("{label}: {url}"))
                .collect();
            text.push_str(&lines.join("\n"));
        }
        text.push_str("\n\n");
        text.push_str(&signature);
        Ok(Rendered {
            language,
            html: html(language, &subject, &paragraphs, &links, &signature),
            subject,
            text,
        })
    }

    /// The variables the templates read, from the message's facts. A fact the message
    /// does not carry is left out, so a template that needs it fails to format.
    fn arguments(
        &self,
        bundle: &FluentBundle<FluentResource>,
        facts: &Facts<'_>,
    ) -> Result<FluentArgs<'static>, String> {
        let payload = facts.payload;
        let text = |key: &str| payload.get(key).and_then(|v| v.as_str());
        let mut args = FluentArgs::new();
        args.set("name", facts.customer_name.trim().to_string());
        args.set("reference", facts.reference.to_string());
        let failure_mode = text("failure_mode").unwrap_or("");
        let (mode_kind, component) = failure_mode.split_once('/').unwrap_or(("", failure_mode));
        let kind = text("kind").unwrap_or(mode_kind);
        args.set("kind", kind.to_string());
        let mode = match component {
            "silence" | "critical" => component.to_string(),
            _ => format!("{mode_kind}-{component}"),
        };
        args.set("mode", mode);
        if let Some(technician) = text("technician") {
            args.set("technician", technician.to_string());
        }
        // Rows queued before outcomes were part of the payload: the templates' default.
        args.set("outcome", text("outcome").unwrap_or("unknown").to_string());
        if let Some(devices) = payload.get("devices").and_then(|d| d.as_array()) {
            args.set("count", devices.len());
        }
        if let Some(expected) = time_of(payload, "expected_failure_at") {
            // Whole days, rounded up: "within 2 days" for 36 hours.
            let seconds = (expected - facts.now).num_seconds().max(0);
            let days = (seconds + 86_399) / 86_400;
            args.set("days", days);
        }
        if let Some((metric, trend)) = symptom(payload) {
            args.set("metric", metric);
            args.set("trend", trend);
        }
        if let (Some(start), Some(end)) =
            (time_of(payload, "slot_start"), time_of(payload, "slot_end"))
        {
            let slot = slot(bundle, facts.time_zone, start, end)?;
            args.set("slot", slot);
        }
        Ok(args)
    }
}

/// Our language of a BCP 47 tag (`pl-PL` → `pl`), if we have its templates.
fn ours(tag: &str) -> Option<&'static str> {
    let primary = tag
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    LANGUAGES
        .iter()
        .map(|(language, _)| *language)
        .find(|language| *language == primary)
}

/// The visit's time in the customer's zone, in their language's `slot` pattern.
fn slot(
    bundle: &FluentBundle<FluentResource>,
    zone: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<String, String> {
    let (start, end) = (start.with_timezone(&zone), end.with_timezone(&zone));
    let format = |id: &str, args: &FluentArgs<'_>| -> Result<String, String> {
        let pattern = bundle
            .get_message(id)
            .and_then(|m| m.value())
            .ok_or_else(|| format!("no template {id}"))?;
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, Some(args), &mut errors);
        if errors.is_empty() {
            Ok(text.into_owned())
        } else {
            Err(format!("{id}: {errors:?}"))
        }
    };
    let time = |t: &DateTime<Tz>| -> Result<String, String> {
        let mut args = FluentArgs::new();
        args.set("hour", t.hour());
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        args.set("hour12", hour12);
        args.set("ampm", if t.hour() < 12 { "AM" } else { "PM" });
        args.set("minute", format!("{:02}", t.minute()));
        format("time", &args)
    };
    let mut date_args = FluentArgs::new();
    date_args.set("weekday", start.weekday().number_from_monday());
    date_args.set("month", start.month());
    date_args.set("day", start.day());
    let mut args = FluentArgs::new();
    args.set("date", format("date", &date_args)?);
    args.set("start", time(&start)?);
    args.set("end", time(&end)?);
    format("slot", &args)
}

fn time_of(payload: &serde_json::Value, key: &str) -> Option<DateTime<Utc>> {
    payload
        .get(key)
        .and_then(|v| v.as_str())
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What the prediction's strongest factor says a customer can picture: a reading of one
/// metric unusually high or low (`drum_vibration_rms.z_short` at +3.1 → "higher").
fn symptom(payload: &serde_json::Value) -> Option<(String, &'static str)> {
    let factor = payload.get("top_factors")?.as_array()?.first()?;
    let feature = factor.get("feature")?.as_str()?;
    let value = factor.get("value")?.as_f64()?;
    let (metric, stat) = feature.rsplit_once('.')?;
    if metric.contains('.') || !(stat.starts_with("z_") || stat.starts_with("slope_")) {
        return None;
    }
    Some((
        metric.to_string(),
        if value >= 0.0 { "higher" } else { "lower" },
    ))
}

/// The HTML part: the same paragraphs, escaped, the links as buttons.
fn html(
    language: &str,
    subject: &str,
    paragraphs: &[String],
    links: &[(String, &str)],
    signature: &str,
) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"{language}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5; max-width: 40em\">\n",
        escape(subject)
    );
    for paragraph in paragraphs {
        out.push_str("<p>");
        out.push_str(&escape(paragraph));
        out.push_str("</p>\n");
    }
    if !links.is_empty() {
        out.push_str("<p>");
        for (label, url) in links {
            out.push_str(&format!(
                "<a href=\"{}\" style=\"display: inline-block; margin: 0 0.5em 0.5em 0; \
                 padding: 0.5em 1em; border-radius: 4px; background: #1f5fa8; color: #fff; \
                 text-decoration: none\">{}</a>\n",
                escape(url),
                escape(label)
            ));
        }
        out.push_str("</p>\n");
    }
    out.push_str("<p>");
    out.push_str(&escape(signature));
    out.push_str("</p>\n</body></html>\n");
    out
}

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use fluent_bundle::FluentValue;

    use super::*;

    fn facts<'a>(
        message_type: &'a str,
        language: &'a str,
        payload: &'a serde_json::Value,
    ) -> Facts<'a> {
        Facts {
            message_type,
            language,
            time_zone: "Europe/Warsaw".parse().unwrap(),
            customer_name: "Anna Nowak",
            payload,
            reference: "FW-42",
            now: DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            links: &[],
        }
    }

    /// Representative facts of every message type.
    fn payload(message_type: &str, devices: usize) -> serde_json::Value {
        let mut p = serde_json::json!({
            "kind": "washer",
            "failure_mode": "washer/drum_bearing",
            "top_factors": [{"feature": "drum_vibration_rms.z_short", "value": 3.1,
                             "contribution": 0.4, "text": "…"}],
            "expected_failure_at": "2026-11-25T10:00:00Z",
            "slot_start": "2026-11-24T13:00:00Z",
            "slot_end": "2026-11-24T14:00:00Z",
            "technician": "Marek",
            "outcome": "fault_confirmed",
        });
        if message_type == "incident_notice" {
            p = serde_json::json!({
                "failure_mode": "silence",
                "devices": (0..devices).map(|i| format!("d{i}")).collect::<Vec<_>>(),
            });
        }
        p
    }

    #[test]
    fn every_template_renders_in_every_language_with_nothing_left_unformatted() {
        let templates = Templates::load().unwrap();
        for (language, _) in LANGUAGES {
            for message_type in MESSAGE_TYPES {
                let links: Vec<(LinkAction, String)> =
                    super::super::links::actions_of(message_type)
                        .iter()
                        .map(|a| (*a, format!("https://x.example/l/1-{}-2-ab", a.as_str())))
                        .collect();
                for (devices, with_links) in
                    [(1, false), (1, true), (2, true), (5, false), (22, true)]
                {
                    let p = payload(message_type, devices);
                    let mut f = facts(message_type, language, &p);
                    if with_links {
                        f.links = &links;
                    }
                    let rendered = templates
                        .render(&f)
                        .unwrap_or_else(|e| panic!("{language} {message_type}: {e}"));
                    if with_links {
                        for (_, url) in &links {
                            assert!(rendered.text.contains(url.as_str()), "{}", rendered.text);
                            assert!(rendered.html.contains(&format!("href=\"{url}\"")));
                        }
                    }
                    assert_eq!(rendered.language, *language);
                    for part in [&rendered.subject, &rendered.text, &rendered.html] {
                        assert!(!part.contains('{') && !part.contains('}'), "{part}");
                        assert!(!part.contains('\u{2068}'), "isolation marks: {part}");
                    }
                    assert!(!rendered.subject.is_empty());
                    assert!(rendered.html.contains(&format!("lang=\"{language}\"")));
                }
            }
        }
    }

    #[test]
    fn a_missing_fact_is_an_error_naming_it_not_a_half_message() {
        let templates = Templates::load().unwrap();
        let p = serde_json::json!({"kind": "washer", "failure_mode": "washer/drum_bearing"});
        let error = templates
            .render(&facts("booking_proposed", "pl", &p))
            .unwrap_err();
        assert!(error.to_string().contains("slot"), "{error}");
    }

    #[test]
    fn dates_are_in_the_customers_zone_and_words() {
        let templates = Templates::load().unwrap();
        let p = payload("booking_proposed", 1);
        let pl = templates
            .render(&facts("booking_proposed", "pl-PL", &p))
            .unwrap();
        // 13:00 UTC is 14:00 in Warsaw (CET) on Tuesday 24 November.
        assert!(
            pl.text.contains("wtorek, 24 listopada, 14:00–15:00"),
            "{}",
            pl.text
        );
        assert!(pl.text.contains("Marek"));
        assert!(pl.text.contains("łożysko bębna"), "{}", pl.text);
        assert!(pl.text.contains("FW-42"));
        let en = templates
            .render(&facts("booking_proposed", "en", &p))
            .unwrap();
        assert!(
            en.text.contains("Tuesday, November 24, 2:00 PM – 3:00 PM"),
            "{}",
            en.text
        );
        assert!(
            en.text
                .contains("drum bearing of your washing machine is wearing out")
        );
        assert!(
            en.text.contains("unusually high drum vibration"),
            "{}",
            en.text
        );
        assert!(en.text.contains("within 6 days"), "{}", en.text);
        let sk = templates
            .render(&facts("booking_proposed", "sk", &p))
            .unwrap();
        assert!(
            sk.text.contains("utorok 24. novembra, 14:00 – 15:00"),
            "{}",
            sk.text
        );
        // Unknown language: English.
        let fallback = templates.render(&facts("resolved", "fr", &p)).unwrap();
        assert_eq!(fallback.language, "en");
    }

    #[test]
    fn plurals_follow_each_languages_rules() {
        let templates = Templates::load().unwrap();
        let render = |language: &str, devices: usize| {
            let p = payload("incident_notice", devices);
            templates
                .render(&facts("incident_notice", language, &p))
                .unwrap()
                .text
        };
        assert!(render("pl", 1).contains("1 Twoje urządzenie"));
        assert!(render("pl", 3).contains("3 Twoje urządzenia"));
        assert!(render("pl", 5).contains("5 Twoich urządzeń"));
        assert!(render("pl", 22).contains("22 Twoje urządzenia"));
        assert!(render("uk", 1).contains("1 вашого пристрою"));
        assert!(render("uk", 5).contains("5 ваших пристроїв"));
        assert!(render("sk", 1).contains("1 vášho zariadenia"));
        assert!(render("sk", 4).contains("4 vašich zariadení"));
        let p = payload("proactive_notice", 1);
        let one_day = serde_json::json!({
            "kind": "car", "failure_mode": "car/battery",
            "expected_failure_at": "2026-11-21T07:00:00Z", "top_factors": p["top_factors"],
        });
        let pl = templates
            .render(&facts("proactive_notice", "pl", &one_day))
            .unwrap();
        assert!(pl.text.contains("w ciągu 1 dnia"), "{}", pl.text);
        assert!(pl.subject.contains("Twój samochód"), "{}", pl.subject);
        let args = templates
            .arguments(
                &templates.bundles["en"],
                &facts("proactive_notice", "en", &one_day),
            )
            .unwrap();
        assert!(matches!(args.get("days"), Some(FluentValue::Number(_))));
    }

    #[test]
    fn html_is_escaped() {
        let templates = Templates::load().unwrap();
        let p = payload("booking_confirmed", 1);
        let mut f = facts("booking_confirmed", "en", &p);
        f.customer_name = "<script>alert(1)</script>";
        let rendered = templates.render(&f).unwrap();
        assert!(!rendered.html.contains("<script>"));
        assert!(rendered.html.contains("&lt;script&gt;"));
    }
}

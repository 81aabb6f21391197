//! Unit tests of [`super`].

use serde_json::{json, Map};

use super::*;
use crate::config::Config;
use crate::event::{Action, Fields, Person};

fn json_api(destination: &str) -> JsonApi {
    let text = format!(
        "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\ndlq_topic = \"t.dlq\"\n\
         [destination]\nkind = \"http\"\n{destination}\n\
         [[workspaces]]\nid = \"acme\"\napi_key_env = \"K\"\n"
    );
    let config = Config::from_toml(&text, "t", [("K".to_string(), "key".to_string())]).unwrap();
    let limiter = Arc::new(Limiter::new(config.workspace_rates(), 4, 1.0));
    JsonApi::new(&config, limiter, Metrics::new()).unwrap()
}

fn track(user: &str) -> Event {
    let mut data = Map::new();
    data.insert("total".into(), json!(12.5));
    Event {
        workspace: "acme".into(),
        person: Person::Id(user.into()),
        action: Action::Track {
            name: "Order Placed".into(),
            data: Fields::from_map(&data),
        },
        timestamp: Some(1_700_000_000),
        dedup_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
    }
}

fn call(encoded: Encoded) -> (String, Vec<(String, String)>, Value) {
    let Encoded::Call { url, headers, body } = encoded else {
        panic!("not a call: {encoded:?}");
    };
    (url, headers, serde_json::from_slice(&body).unwrap())
}

#[test]
fn url_headers_and_body_are_rendered_from_the_event() {
    let api = json_api(
        r#"url = "https://api.example.com/v1/people/{{ user_id | segment }}/events"
body = '{"name": {{ event | tojson }}, "amount": {{ properties.total }}, "at": {{ timestamp }}}'
[destination.headers]
X-Workspace = "{{ workspace }}""#,
    );
    let (url, headers, body) = call(api.encode(&track("a b/c")).unwrap());
    assert_eq!(url, "https://api.example.com/v1/people/a%20b%2Fc/events");
    assert_eq!(
        headers,
        vec![("X-Workspace".to_string(), "acme".to_string())]
    );
    assert_eq!(
        body,
        json!({"name": "Order Placed", "amount": 12.5, "at": 1_700_000_000})
    );
}

#[test]
fn without_a_body_template_the_event_is_sent_as_sluice_reads_it() {
    let api = json_api(r#"url = "https://api.example.com/v1/events""#);
    let (_, headers, body) = call(api.encode(&track("u1")).unwrap());
    assert!(headers.is_empty());
    assert_eq!(
        body,
        json!({"type": "track", "user_id": "u1", "event": "Order Placed",
               "properties": {"total": 12.5}, "message_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
               "timestamp": 1_700_000_000, "workspace": "acme"})
    );
}

#[test]
fn properties_read_in_templates_as_minijinja_would_read_them() {
    let mut event = track("u1");
    if let Action::Track { data, .. } = &mut event.action {
        let mut map = data.to_map().unwrap();
        map.insert("note".into(), json!("<b>'&'</b>"));
        map.insert("items".into(), json!([{"sku": "a1"}, {"sku": "b2"}]));
        *data = Fields::from_map(&map);
    }
    let body = |template: &str| {
        let api = json_api(&format!(
            "url = \"https://api.example.com/v1/events\"\nbody = '''{template}'''"
        ));
        let (_, _, body) = call(api.encode(&event).unwrap());
        body
    };
    // The whole map, escaped as minijinja's own tojson escapes it: the same JSON.
    let Action::Track { data, .. } = &event.action else {
        unreachable!()
    };
    let expected = Value::Object(data.to_map().unwrap());
    assert_eq!(body("{{ properties | tojson }}"), expected);
    let env = minijinja::Environment::new();
    let theirs = env
        .render_str(
            "{{ p | tojson }}",
            minijinja::context! { p => expected.clone() },
        )
        .unwrap();
    let api = json_api(
        "url = \"https://api.example.com/v1/events\"\nbody = '{\"p\": {{ properties | tojson }}}'",
    );
    let Encoded::Call { body: ours, .. } = api.encode(&event).unwrap() else {
        unreachable!()
    };
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        format!("{{\"p\": {theirs}}}")
    );
    // Inside it: fields, nested items, iteration, and the map within another value.
    assert_eq!(
        body("{\"t\": {{ properties.total }}, \"sku\": {{ properties['items'][1].sku | tojson }}}"),
        json!({"t": 12.5, "sku": "b2"})
    );
    assert_eq!(
        body("[{% for k in properties | sort %}{{ k | tojson }}{% if not loop.last %},{% endif %}{% endfor %}]"),
        json!(["items", "note", "total"])
    );
    assert_eq!(
        body("{{ {\"wrapped\": properties} | tojson }}"),
        json!({ "wrapped": expected })
    );
    assert_eq!(body("{{ properties | tojson(indent=2) }}"), expected);
    assert_eq!(body("{{ properties | length }}"), json!(3));
    // A name the map lacks is an error, as for any other name.
    let api =
        json_api("url = \"https://api.example.com/v1/events\"\nbody = '{{ properties.missing }}'");
    assert!(matches!(api.encode(&event), Err(InvalidEvent::Template(_))));
}

#[test]
fn a_template_that_fails_for_an_event_makes_it_invalid_with_the_reason() {
    // An identify has no `properties`: strict templates refuse the unknown name.
    let api = json_api(
        r#"url = "https://api.example.com/v1/events"
body = '{"amount": {{ properties.total }}}'"#,
    );
    let identify = Event {
        action: Action::Identify {
            attributes: Fields::empty(),
        },
        ..track("u1")
    };
    let err = api.encode(&identify).unwrap_err();
    assert!(matches!(err, InvalidEvent::Template(_)), "{err}");
    assert_eq!(err.reason(), FailureReason::Unsupported);
    // A body that renders to something other than JSON.
    let api = json_api(
        r#"url = "https://api.example.com/v1/events"
body = '{"name": {{ event }}}'"#,
    );
    let err = api.encode(&track("u1")).unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[test]
fn a_batch_answer_lists_the_refused_events_and_the_rest_are_delivered() {
    let api = json_api(
        r#"url = "https://api.example.com/v1/batch"
send = "batch"
item_errors = "/result/failed""#,
    );
    let answer = r#"{"result": {"failed": [{"index": 1, "reason": "bad email"}]}}"#;
    let outcomes = api.item_outcomes(answer, 200, 3);
    assert_eq!(outcomes[0], ItemOutcome::Delivered);
    assert_eq!(outcomes[2], ItemOutcome::Delivered);
    let ItemOutcome::Rejected(failure) = &outcomes[1] else {
        panic!("{:?}", outcomes[1]);
    };
    assert_eq!(failure.reason, FailureReason::InvalidItem);
    assert_eq!(failure.detail, "bad email");
    // A 200 without the list: all delivered.
    let all = |o: &[ItemOutcome], delivered: bool| {
        o.iter()
            .all(|o| (*o == ItemOutcome::Delivered) == delivered)
    };
    assert!(all(&api.item_outcomes("{}", 200, 2), true));
    // A 207 without a readable list, or a list entry that names no event of the
    // batch: none counts as delivered.
    assert!(all(&api.item_outcomes("not json", 207, 2), false));
    let stray = r#"{"result": {"failed": [{"index": 9}]}}"#;
    assert!(all(&api.item_outcomes(stray, 200, 2), false));
}

#[test]
fn a_fixed_url_or_header_is_sent_as_a_template_of_it_would_render() {
    // minijinja drops one trailing newline; a fixed text (not rendered) must too, or
    // the header would carry it.
    let api = json_api(
        "url = \"https://api.example.com/v1/events\\n\"\n[destination.headers]\nX-Source = \"sluice\\n\"",
    );
    let (url, headers, _) = call(api.encode(&track("u1")).unwrap());
    assert_eq!(url, "https://api.example.com/v1/events");
    assert_eq!(
        headers,
        vec![("X-Source".to_string(), "sluice".to_string())]
    );
}

/// A header written out in the config may hold a key (`Authorization = "Bearer …"`):
/// the client's debug form names headers, never their values.
#[test]
fn a_fixed_header_value_never_shows_in_the_clients_debug_form() {
    let api = json_api(
        "url = \"https://api.example.com/v1/events\"\n[destination.headers]\nX-Api-Key = \"sk-marker-123\"",
    );
    let shown = format!("{api:?}");
    assert!(shown.contains("X-Api-Key"), "{shown}");
    assert!(!shown.contains("sk-marker-123"), "{shown}");
}

#[test]
fn tojson_writes_every_kind_of_value_as_minijinjas_own_tojson_writes_it() {
    let mut ours = minijinja::Environment::new();
    ours.add_filter("tojson", context::tojson);
    let theirs = minijinja::Environment::new();
    let values = [
        json!("u1"),
        json!("a text longer than a small string, with <b>'&'</b>, \"quotes\", \\, é and 🎉\n"),
        json!(12.5),
        json!(-3),
        json!(null),
        json!(true),
        json!(["x<y", 1, {"k": "it's"}]),
        json!({"nested": {"a": [1, 2]}, "html": "</script>"}),
    ];
    for value in values {
        let render = |env: &minijinja::Environment<'_>| {
            env.render_str(
                "{{ v | tojson }}",
                minijinja::context! { v => value.clone() },
            )
            .unwrap()
        };
        assert_eq!(render(&ours), render(&theirs), "for {value}");
    }
}

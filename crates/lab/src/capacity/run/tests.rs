//! Unit tests of [`super`].

use super::*;

#[test]
fn every_destination_is_pointed_at_the_api_under_test() {
    let text = r#"
[kafka]
brokers = "b:9092"
group_id = "g"
topics = ["t"]
dlq_topic = "t.dlq"

[destination]
kind = "http"
url = "https://orders.example.com/api/v1/orders/{{ user_id | segment }}"
auth = "oauth2"
token_url = "https://login.example.com/oauth/token"

[destinations.product]
kind = "segment"

[[workspaces]]
id = "orders"
site_id = "client"
api_key_env = "K"

[[workspaces]]
id = "shop"
destination = "product"
write_key_env = "K"
"#;
    let mut config = Config::from_toml(text, "t", [("K".to_string(), "k".to_string())]).unwrap();
    point_at(&mut config, "http://127.0.0.1:9/");
    let d = &config.destination;
    assert_eq!(
        d.url.as_deref(),
        Some("http://127.0.0.1:9/json/api/v1/orders/{{ user_id | segment }}")
    );
    assert_eq!(
        d.token_url.as_deref(),
        Some("http://127.0.0.1:9/auth/token")
    );
    assert_eq!(d.base_url, None);
    assert_eq!(
        config.destinations["product"].base_url.as_deref(),
        Some("http://127.0.0.1:9")
    );
}

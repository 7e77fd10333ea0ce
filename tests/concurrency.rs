//! Many admin writes at once on one worker thread: every one is acknowledged (each waits
//! for a flush that covers it) and the server stays responsive. sled 0.34 deadlocked when
//! every write called its own `flush_async`; writes now share one flush at a time.

mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn concurrent_writes_all_complete() {
    let s = TestServer::start().await;
    s.seed_domain("example.com").await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (client, url, token) = (s.client.clone(), s.url.clone(), s.token.clone());
        tasks.push(tokio::spawn(async move {
            client
                .put(format!(
                    "{url}/api/v1/domains/example.com/users/{i}/devices/{i}a"
                ))
                .bearer_auth(token)
                .json(&json!({
                    "device-models-model": "yealink-t46s",
                    "device-provisioning-mac-address": format!("0015650{i:05x}"),
                }))
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    let all = async {
        for t in tasks {
            let st = t.await.unwrap().unwrap();
            assert_eq!(st, reqwest::StatusCode::CREATED);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("writes hung");
    let phones = s.get("/phones?limit=1000").await.1;
    assert_eq!(phones["phones"].as_array().unwrap().len(), 200);
}

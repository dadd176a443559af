//! Configured HTTP smoke checks (the runbook's `curl -I` of the home page and `/v1/status`).

use crate::config::SmokeCheck;
use crate::judge::SmokeSample;

pub async fn probe(client: &reqwest::Client, check: &SmokeCheck, url: &str) -> SmokeSample {
    let response = match client
        .request(check.method.get().clone(), url)
        .timeout(check.timeout.get())
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return SmokeSample::Failed(super::describe(&e)),
    };
    let status = response.status().as_u16();
    if status != check.expect_status {
        return SmokeSample::Failed(format!("HTTP {status}, expected {}", check.expect_status));
    }
    if let Some(needle) = &check.expect_body_contains {
        let body = match tokio::time::timeout(
            check.timeout.get(),
            super::read_bounded(response, super::MAX_BODY),
        )
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return SmokeSample::Failed(e),
            Err(_) => return SmokeSample::Failed("body not received in time".into()),
        };
        if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
            return SmokeSample::Failed(format!("body does not contain {needle:?}"));
        }
    }
    SmokeSample::Passed
}

//! SASL OAUTHBEARER for the Kafka endpoint: the token librdkafka asks for is an Entra token
//! for the namespace, fetched through the input's credential (here the client-secret provider,
//! at the Entra stand-in), also when librdkafka asks from a runtime worker. The broker side of
//! the handshake has no local peer (Tansu's OAUTHBEARER wants an OIDC issuer's signed JWTs), so
//! this covers what we hand librdkafka, not Event Hubs' check of it.

mod common;
mod msapi_standin;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use defender_dsm::inputs::auth::TokenProvider;
use defender_dsm::inputs::kafka_oauth::{EntraTokens, KafkaContext};
use msapi_standin::{Data, Faults, MsApi};
use rdkafka::client::ClientContext;

fn context(api: &MsApi, secret: &str, runtime: &tokio::runtime::Runtime) -> KafkaContext {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let provider = TokenProvider::new(
        reqwest::Client::new(),
        &api.url,
        "3f1e7a52-9c0d-4b8e-a1f3-5d2c7e9b4a10",
        "app",
        secret.to_string(),
    );
    KafkaContext {
        entra: Some(EntraTokens {
            credential: Arc::new(provider),
            scope: EntraTokens::scope_for("contoso.servicebus.windows.net:9093"),
            runtime: runtime.handle().clone(),
        }),
    }
}

#[test]
fn librdkafka_gets_an_entra_token_for_the_namespace_from_a_runtime_worker() {
    let api = MsApi::start(
        Data::default(),
        Faults::default(),
        "s3cret",
        Duration::from_secs(3600),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ctx = Arc::new(context(&api, "s3cret", &runtime));
    let asked = ctx.clone();
    // librdkafka calls back from whichever thread polls the consumer: here a worker.
    let token = runtime
        .block_on(async move {
            tokio::spawn(async move { asked.generate_oauth_token(None).map_err(|e| e.to_string()) })
                .await
        })
        .expect("joined");
    let Ok(token) = token else {
        panic!("no token: {:?}", token.err());
    };
    assert!(token.token.starts_with("tok-"), "{}", token.token);
    assert_eq!(token.principal_name, "defender-dsm");
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // Renewed a minute before the hour is up.
    assert!(
        token.lifetime_ms > now_ms + 50 * 60 * 1000,
        "{}",
        token.lifetime_ms
    );
    assert!(token.lifetime_ms <= now_ms + 3600 * 1000);
    let requests = *api.shared.token_requests.lock().expect("count");
    assert_eq!(requests, 1);

    let Err(refused) = context(&api, "wrong", &runtime).generate_oauth_token(None) else {
        panic!("a wrong secret gave a token");
    };
    assert!(
        refused
            .to_string()
            .contains("Entra sign-in for the Kafka endpoint"),
        "{refused}"
    );
}

#[test]
fn without_a_credential_the_callback_says_what_is_missing() {
    let Err(e) = (KafkaContext { entra: None }).generate_oauth_token(None) else {
        panic!("a token without a credential");
    };
    assert!(e.to_string().contains("credential"), "{e}");
}

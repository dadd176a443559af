//! Failed Kubernetes API requests counted by category: the tower layer the daemon's client is
//! built with.

use super::metrics::{API_METHODS, Metrics};

impl Metrics {
    /// A failed Kubernetes API request.
    pub fn api_error(&self, method: &http::Method, category: &'static str) {
        let method = API_METHODS
            .iter()
            .find(|m| **m == method.as_str())
            .copied()
            .unwrap_or("OTHER");
        self.api_errors.with_label_values(&[method, category]).inc();
    }

    /// A tower layer for the Kubernetes client that counts each failed request into
    /// `kube_api_errors_total`.
    pub fn api_error_layer(self: &std::sync::Arc<Self>) -> ApiErrorLayer {
        ApiErrorLayer(self.clone())
    }
}

/// The category of a Kubernetes API answer that is not a success: the status code's meaning,
/// or `connection` when no answer came.
pub fn api_error_category(status: Option<u16>) -> &'static str {
    match status {
        Some(401) => "unauthorized",
        Some(403) => "forbidden",
        Some(404) => "not_found",
        Some(409) => "conflict",
        Some(422) => "invalid",
        Some(429) => "too_many_requests",
        Some(c) if c >= 500 => "server_error",
        Some(_) => "rejected",
        None => "connection",
    }
}

/// A Kubernetes client for `config` whose failed requests are counted in `metrics`.
pub fn kube_client(
    config: kube::Config,
    metrics: &std::sync::Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&metrics.api_error_layer())
        .build())
}

/// Wraps the Kubernetes client's HTTP service: see [`Metrics::api_error_layer`].
#[derive(Clone)]
pub struct ApiErrorLayer(std::sync::Arc<Metrics>);

impl<S> tower::Layer<S> for ApiErrorLayer {
    type Service = ApiErrors<S>;
    fn layer(&self, inner: S) -> ApiErrors<S> {
        ApiErrors {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`ApiErrorLayer`]: a response of 400 or more, or no response, is counted.
#[derive(Clone)]
pub struct ApiErrors<S> {
    inner: S,
    metrics: std::sync::Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for ApiErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.method().clone();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            match &answer {
                Ok(r) if r.status().as_u16() >= 400 => {
                    metrics.api_error(&method, api_error_category(Some(r.status().as_u16())));
                }
                Ok(_) => {}
                Err(_) => metrics.api_error(&method, api_error_category(None)),
            }
            answer
        })
    }
}

//! The dispatch, fan-out and delivery spans name the tenant of the work they cover.

use crate::webhooks::{Running, config, event, publish, setup, worker_path};
use neo_core::TenantId;
use neo_events::{DomainEvent, NewEndpoint};
use neo_testkit::{HttpReceiver, PgRoute};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span's id, name and `tenant` field, as last recorded.
type Captured = (u64, &'static str, Option<String>);

/// Every span opened, with its `tenant` field.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Captured>>>);

struct TenantField(Option<String>);

impl Visit for TenantField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "tenant" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "tenant" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut tenant = TenantField(None);
        attrs.record(&mut tenant);
        neo_core::sync::lock(&self.0).push((id.into_u64(), attrs.metadata().name(), tenant.0));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut tenant = TenantField(None);
        values.record(&mut tenant);
        if let Some(value) = tenant.0 {
            for span in neo_core::sync::lock(&self.0).iter_mut() {
                if span.0 == id.into_u64() {
                    span.2 = Some(value.clone());
                }
            }
        }
    }
}

impl Spans {
    /// The `tenant` of every span named `name`.
    fn tenants(&self, name: &str) -> Vec<Option<String>> {
        neo_core::sync::lock(&self.0)
            .iter()
            .filter(|span| span.1 == name)
            .map(|span| span.2.clone())
            .collect()
    }
}

#[tokio::test]
async fn dispatch_fan_out_and_delivery_spans_carry_the_tenant() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let s = setup(PgRoute::Direct, worker_path(config(&[50]))).await;
    let receiver = HttpReceiver::start().await.unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    s.webhooks
        .create_endpoint(NewEndpoint::new(receiver.url("/hook")).subscribe("*"))
        .await
        .unwrap();

    // One tenant's events: the dispatch and fan-out spans name it.
    publish(&s, &[event("organization.created", 1).tenant(a)]).await;
    assert_eq!(s.webhooks.dispatch_once(&s.outbox).await.unwrap(), 1);
    let a_text = Some(a.to_string());
    assert_eq!(
        spans.tenants("neo_events.webhook.dispatch"),
        vec![a_text.clone()]
    );
    assert_eq!(
        spans.tenants("neo_events.webhook.fan_out"),
        vec![a_text.clone()]
    );

    // Two tenants' events in one round: `several`; the outbox's own dispatcher too.
    publish(
        &s,
        &[
            event("organization.created", 2).tenant(a),
            event("organization.created", 3).tenant(b),
        ],
    )
    .await;
    s.outbox
        .dispatch_once(|events: Vec<DomainEvent>| {
            let webhooks = s.webhooks.clone();
            async move { webhooks.fan_out(&events).await }
        })
        .await
        .unwrap();
    assert_eq!(
        spans.tenants("neo_events.outbox.dispatch"),
        vec![Some("several".to_owned())]
    );
    assert_eq!(
        spans.tenants("neo_events.webhook.fan_out"),
        vec![a_text.clone(), Some("several".to_owned())]
    );

    // Each delivery's span names its delivery's tenant.
    let running = {
        let mut running = Running::default();
        running.worker(&s);
        running
    };
    receiver.wait_for(3, Duration::from_secs(10)).await;
    running.stop().await;
    s.webhooks.shutdown().await;
    let mut delivered = spans.tenants("neo_events.webhook.deliver");
    delivered.sort();
    let mut expected = vec![a_text.clone(), a_text, Some(b.to_string())];
    expected.sort();
    assert_eq!(delivered, expected);
    receiver.shutdown().await;
}

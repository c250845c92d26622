use neo_core::{ErrorKind, HasErrorKind, OrganizationId, UserId};
use std::collections::BTreeSet;

#[test]
fn new_ids_are_v7_and_strictly_increasing() {
    let ids: Vec<OrganizationId> = (0..10_000).map(|_| OrganizationId::new()).collect();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{:?} !< {:?}", pair[0], pair[1]);
    }
    assert!(ids.iter().all(|id| id.as_uuid().get_version_num() == 7));
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
}

#[test]
fn display_parse_round_trip_and_other_forms() {
    let id = UserId::new();
    let text = id.to_string();
    assert_eq!(text.len(), 36);
    assert_eq!(UserId::parse(&text).unwrap(), id);
    assert_eq!(
        UserId::parse(&id.as_uuid().simple().to_string()).unwrap(),
        id
    );
    assert_eq!(UserId::parse(&id.as_uuid().urn().to_string()).unwrap(), id);
    assert_eq!(UserId::try_from(id.into_uuid()).unwrap(), id);
}

#[test]
fn refuses_non_v7_nil_and_garbage_with_a_reason() {
    let v4 = UserId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap_err();
    assert_eq!(v4.kind(), ErrorKind::Validation);
    assert_eq!(
        v4.to_string(),
        "invalid user id: expected a version-7 UUID, got version 4"
    );
    let nil = UserId::parse("00000000-0000-0000-0000-000000000000").unwrap_err();
    assert!(nil.to_string().contains("nil UUID"), "{nil}");
    let garbage = UserId::parse("not-a-uuid").unwrap_err();
    assert!(
        garbage
            .to_string()
            .starts_with("invalid user id: not a UUID"),
        "{garbage}"
    );
    let long = UserId::parse(&"a".repeat(10_000)).unwrap_err();
    assert!(long.to_string().contains("too long"), "{long}");
}

#[test]
fn serde_is_a_plain_string_and_validates() {
    let id = OrganizationId::new();
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{id}\""));
    assert_eq!(serde_json::from_str::<OrganizationId>(&json).unwrap(), id);
    let err = serde_json::from_str::<OrganizationId>("\"67e55044-10b1-426f-9247-bb680e5fe0c8\"")
        .unwrap_err();
    assert!(err.to_string().contains("version-7"), "{err}");
}

#[test]
fn created_at_is_the_generation_time() {
    let before = chrono::Utc::now().timestamp_millis();
    let id = OrganizationId::new();
    let after = chrono::Utc::now().timestamp_millis();
    let at = id.created_at().timestamp_millis();
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
}

#[test]
fn debug_names_the_type() {
    let id = OrganizationId::new();
    assert_eq!(format!("{id:?}"), format!("OrganizationId({id})"));
}

neo_core::define_id! {
    /// A host-defined id, to show the macro works outside neo-core.
    pub struct InvoiceId("invoice id");
}

#[test]
fn hosts_define_their_own_ids() {
    let id = InvoiceId::new();
    assert_eq!(InvoiceId::LABEL, "invoice id");
    assert_eq!(id, id.to_string().parse().unwrap());
    let err = "x".parse::<InvoiceId>().unwrap_err();
    assert!(err.to_string().starts_with("invalid invoice id"));
}

#[test]
fn an_organization_id_names_its_tenant() {
    let organization = OrganizationId::new();
    let tenant = neo_core::TenantId::from(organization);
    assert_eq!(tenant.into_uuid(), organization.into_uuid());
    assert_eq!(tenant.to_string(), organization.to_string());
}

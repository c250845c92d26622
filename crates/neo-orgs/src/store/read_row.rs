//! Organizations from the rows of the reads' `SELECT` (its columns and its `domains`).
//!
//! Each column is found by name and its type checked once per result ([`ReadColumns::of`]);
//! the values are then decoded without sqlx's per-value type check (`Row::try_get` compares
//! the column's type with the Rust type's for each of the 18 values of each row, a thousand
//! rows in a `get_many`), timestamps straight from their 8 bytes and JSON documents straight
//! from theirs. The values are the same as sqlx's decoding gives; a column of another type
//! fails the whole read with a database error, as a value that does not decode does.

use super::postgres::db;
use crate::OrgError;
use crate::model::{Changed, OrgStatus, Organization};
use chrono::{DateTime, Utc};
use neo_core::{OrganizationId, Slug};
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::types::Json;
use sqlx::{Column, Postgres, Row, Type, TypeInfo, ValueRef};
use uuid::Uuid;

/// Where each column of the reads' `SELECT` is, its type checked, found once per result.
pub(super) struct ReadColumns {
    id: usize,
    name: usize,
    slug: usize,
    display_name: usize,
    description: usize,
    status: usize,
    suspension_reason: usize,
    verification: usize,
    primary_contact: usize,
    legal: usize,
    branding: usize,
    website: usize,
    metadata: usize,
    created_at: usize,
    updated_at: usize,
    deleted_at: usize,
    version: usize,
    domains: usize,
}

impl ReadColumns {
    /// The columns of `row`'s result, each checked to hold the type it is decoded as.
    ///
    /// # Errors
    /// A database error naming a missing column or one of another type.
    pub(super) fn of(row: &PgRow) -> Result<Self, OrgError> {
        let at = |name: &str, compatible: fn(&PgTypeInfo) -> bool| {
            let column = row.try_column(name).map_err(db)?;
            if compatible(column.type_info()) {
                Ok(column.ordinal())
            } else {
                Err(db(sqlx::Error::ColumnDecode {
                    index: format!("{name:?}"),
                    source: format!(
                        "the column is of type {}, which is not read here",
                        column.type_info().name()
                    )
                    .into(),
                }))
            }
        };
        let text = <String as Type<Postgres>>::compatible;
        let uuid = <Uuid as Type<Postgres>>::compatible;
        let time = <DateTime<Utc> as Type<Postgres>>::compatible;
        Ok(ReadColumns {
            id: at("id", uuid)?,
            name: at("name", text)?,
            slug: at("slug", text)?,
            display_name: at("display_name", text)?,
            description: at("description", text)?,
            status: at("status", text)?,
            suspension_reason: at("suspension_reason", text)?,
            verification: at("verification", jsonb)?,
            primary_contact: at("primary_contact", uuid)?,
            legal: at("legal", jsonb)?,
            branding: at("branding", jsonb)?,
            website: at("website", text)?,
            metadata: at("metadata", jsonb)?,
            created_at: at("created_at", time)?,
            updated_at: at("updated_at", time)?,
            deleted_at: at("deleted_at", time)?,
            version: at("version", <i64 as Type<Postgres>>::compatible)?,
            domains: at("domains", jsonb)?,
        })
    }
}

/// Only `jsonb` (every document column, and the `jsonb_agg` of the domains), whose binary
/// form is the version byte and the text: [`json`] reads it so.
fn jsonb(ty: &PgTypeInfo) -> bool {
    *ty == <Json<()> as Type<Postgres>>::type_info()
}

/// The value at `index`, or `None` for NULL.
#[inline]
fn value(row: &PgRow, index: usize) -> Result<Option<PgValueRef<'_>>, OrgError> {
    let value = row.try_get_raw(index).map_err(db)?;
    Ok((!value.is_null()).then_some(value))
}

/// A decoding error of the value at `index`.
fn decode_error(index: usize, source: sqlx::error::BoxDynError) -> OrgError {
    db(sqlx::Error::ColumnDecode {
        index: format!("{index:?}"),
        source,
    })
}

/// NULL where a value must be (as `Row::try_get` reports it).
fn null(index: usize) -> OrgError {
    decode_error(index, Box::new(sqlx::error::UnexpectedNullError))
}

/// A value of a type [`ReadColumns::of`] checked, decoded without a second check.
#[inline]
fn get<'r, T: sqlx::Decode<'r, Postgres>>(row: &'r PgRow, index: usize) -> Result<T, OrgError> {
    row.try_get_unchecked(index).map_err(db)
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` (checked by [`ReadColumns::of`]): in binary, microseconds since
/// PostgreSQL's epoch, turned into the instant without going through a calendar date.
#[inline]
fn timestamp(row: &PgRow, index: usize) -> Result<Option<DateTime<Utc>>, OrgError> {
    let Some(value) = value(row, index)? else {
        return Ok(None);
    };
    if value.format() != PgValueFormat::Binary {
        return get(row, index);
    }
    let micros = <[u8; 8]>::try_from(bytes(&value, index)?)
        .map(i64::from_be_bytes)
        .map_err(|_| decode_error(index, "a timestamp is 8 bytes".into()))?;
    micros
        .checked_add(POSTGRES_EPOCH_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .map(Some)
        .ok_or_else(|| decode_error(index, "the timestamp is out of range".into()))
}

/// A `timestamptz` that is never NULL.
#[inline]
fn required_timestamp(row: &PgRow, index: usize) -> Result<DateTime<Utc>, OrgError> {
    timestamp(row, index)?.ok_or_else(|| null(index))
}

/// The bytes of a value at `index`.
#[inline]
fn bytes<'r>(value: &PgValueRef<'r>, index: usize) -> Result<&'r [u8], OrgError> {
    value.as_bytes().map_err(|e| decode_error(index, e))
}

/// The bytes of a `jsonb` value (checked by [`ReadColumns::of`]) in binary, the version byte
/// first; `None` for one sent as text (which [`json`] leaves to sqlx). NULL is an error.
#[inline]
fn json_bytes(row: &PgRow, index: usize) -> Result<Option<&[u8]>, OrgError> {
    let Some(value) = value(row, index)? else {
        return Err(null(index));
    };
    if value.format() != PgValueFormat::Binary {
        return Ok(None);
    }
    bytes(&value, index).map(Some)
}

/// A `jsonb` document straight into `T`: from `binary`, its bytes as [`json_bytes`] read
/// them (the version byte, then the JSON text), or else through sqlx's decoding.
fn json<T: DeserializeOwned>(
    row: &PgRow,
    index: usize,
    binary: Option<&[u8]>,
) -> Result<T, OrgError> {
    let Some(binary) = binary else {
        let Json(document) = get::<Json<T>>(row, index)?;
        return Ok(document);
    };
    match binary.split_first() {
        Some((1, text)) => serde_json::from_slice(text).map_err(|e| decode_error(index, e.into())),
        _ => Err(decode_error(
            index,
            "unsupported JSONB format version".into(),
        )),
    }
}

/// The document at `index` (its bytes `binary`, as [`json_bytes`] read them): `field` of
/// `same`, the organization of the row before, when that row had the same bytes; else parsed.
#[inline]
fn document<T: Clone + DeserializeOwned>(
    row: &PgRow,
    index: usize,
    binary: Option<&[u8]>,
    same: Option<&Organization>,
    field: impl FnOnce(&Organization) -> &T,
) -> Result<T, OrgError> {
    match same {
        Some(org) => Ok(field(org).clone()),
        None => json(row, index, binary),
    }
}

/// The bytes of the JSON documents of a decoded row, kept to compare the next row's with:
/// its verification, legal identity, branding, domains and metadata, in this order (`None`:
/// sent as text, compared with nothing).
type Documents<'r> = [Option<&'r [u8]>; 5];

/// An organization from a row of the reads' `SELECT`, its columns where `at` found them.
///
/// # Errors
/// A database error for a value that does not decode; the organization's for one that is
/// not valid (a slug, a status, a URL or an id).
pub(super) fn from_row(row: &PgRow, at: &ReadColumns) -> Result<Organization, OrgError> {
    let deleted_at = timestamp(row, at.deleted_at)?;
    Ok(from_row_after(row, at, deleted_at, None)?.0)
}

/// The organizations of `rows` (one result of the reads' `SELECT`) in their order; without
/// the deleted ones when `skip_deleted` (decoded no further than their `deleted_at`).
///
/// Each JSON document whose bytes are the same as in the row decoded before is cloned from
/// that organization instead of parsed again. Organizations that never set their legal
/// identity, branding, verification, metadata or domains store the same default documents,
/// and parsing the five documents was 40% of decoding a row; a document that differs costs
/// one comparison of its bytes. Each value is fetched from its row once.
///
/// # Errors
/// As [`from_row`].
pub(super) fn from_rows(rows: &[PgRow], skip_deleted: bool) -> Result<Vec<Organization>, OrgError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let at = ReadColumns::of(first)?;
    let mut orgs: Vec<Organization> = Vec::with_capacity(rows.len());
    let mut previous: Option<Documents<'_>> = None;
    for row in rows {
        let deleted_at = timestamp(row, at.deleted_at)?;
        if skip_deleted && deleted_at.is_some() {
            continue;
        }
        let before = previous.zip(orgs.last());
        let (org, documents) = from_row_after(row, &at, deleted_at, before)?;
        orgs.push(org);
        previous = Some(documents);
    }
    Ok(orgs)
}

/// [`from_row`] given its `deleted_at`, read already, and the documents of the row decoded
/// before it with their organization; returns the row's documents too.
#[inline]
fn from_row_after<'r>(
    row: &'r PgRow,
    at: &ReadColumns,
    deleted_at: Option<DateTime<Utc>>,
    before: Option<(Documents<'_>, &Organization)>,
) -> Result<(Organization, Documents<'r>), OrgError> {
    let id: Uuid = get(row, at.id)?;
    let slug: &str = get(row, at.slug)?;
    let status: &str = get(row, at.status)?;
    let contact: Option<Uuid> = get(row, at.primary_contact)?;
    let website: Option<&str> = get(row, at.website)?;
    let documents: Documents<'r> = [
        json_bytes(row, at.verification)?,
        json_bytes(row, at.legal)?,
        json_bytes(row, at.branding)?,
        json_bytes(row, at.domains)?,
        json_bytes(row, at.metadata)?,
    ];
    let [verification, legal, branding, domains, metadata] = documents;
    // Cloned from the organization before where the bytes are the same, else parsed
    // straight into the typed parts, without an intermediate `serde_json::Value`.
    let same = |document: usize| {
        before
            .filter(|(previous, _)| {
                previous[document].is_some() && previous[document] == documents[document]
            })
            .map(|(_, org)| org)
    };
    let verification = document(row, at.verification, verification, same(0), |o| {
        &o.verification
    })?;
    let legal = document(row, at.legal, legal, same(1), |o| &o.legal)?;
    let branding = document(row, at.branding, branding, same(2), |o| &o.branding)?;
    let domains = document(row, at.domains, domains, same(3), |o| &o.domains)?;
    let metadata = match same(4) {
        Some(org) => org.metadata.clone(),
        None => crate::model::metadata_from_storage(json(row, at.metadata, metadata)?)?,
    };
    let org = Organization {
        id: OrganizationId::from_uuid(id)?,
        name: get(row, at.name)?,
        slug: Slug::parse(slug)?,
        display_name: get(row, at.display_name)?,
        description: get(row, at.description)?,
        status: OrgStatus::parse(status)?,
        suspension_reason: get(row, at.suspension_reason)?,
        verification,
        primary_contact: contact.map(neo_core::UserId::from_uuid).transpose()?,
        legal,
        branding,
        website: website.map(neo_core::HttpsUrl::parse).transpose()?,
        domains,
        metadata,
        created_at: required_timestamp(row, at.created_at)?,
        updated_at: required_timestamp(row, at.updated_at)?,
        deleted_at,
        version: get(row, at.version)?,
        events: Vec::new(),
        changed: Changed::default(),
    };
    Ok((org, documents))
}

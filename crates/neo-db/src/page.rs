//! Keyset and offset pagination over a [`BatchRepository`]'s table.
//!
//! Sort keys come from the repository's whitelist ([`BatchRepository::with_sortable`]) and
//! are always followed by the id, so the order is total and pages never skip or repeat rows.
//! Sort columns should be `NOT NULL` (row comparison treats NULL as unknown).

use crate::batch::{BatchRepository, Conn, Record, sql};
use crate::ident::Ident;
use crate::{Error, Result};
use neo_core::CursorCodec;
use neo_core::pagination::{CountMode, CursorPage, Page, PageRequest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{Acquire, Encode, Postgres, Type};

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

impl SortOrder {
    fn keyword(self) -> &'static str {
        match self {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        }
    }

    fn comparison(self) -> &'static str {
        match self {
            SortOrder::Asc => ">",
            SortOrder::Desc => "<",
        }
    }
}

/// A sort key accepted by one repository's whitelist; made by [`BatchRepository::sort`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    column: Ident,
    order: SortOrder,
}

impl Sort {
    /// The column sorted on.
    pub fn column(&self) -> &str {
        self.column.as_str()
    }

    /// The direction.
    pub fn order(&self) -> SortOrder {
        self.order
    }
}

/// What a keyset cursor token holds: the sort it belongs to and the last row's key and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetPosition<K, I> {
    /// The sort column the position belongs to.
    pub sort: String,
    /// The direction it belongs to.
    pub order: SortOrder,
    /// The last row's sort value.
    pub key: K,
    /// The last row's id.
    pub id: I,
}

impl<T: Record> BatchRepository<T> {
    /// A sort on `column`, which must be in the whitelist given to
    /// [`Self::with_sortable`] (the id column is always allowed).
    ///
    /// # Errors
    /// [`Error::Invalid`] (kind `Validation`) for any other column; no SQL is built.
    pub fn sort(&self, column: &str, order: SortOrder) -> Result<Sort> {
        let allowed = self
            .sortable
            .iter()
            .chain(std::iter::once(&self.id_column))
            .find(|c| c.as_str() == column);
        match allowed {
            Some(column) => Ok(Sort {
                column: column.clone(),
                order,
            }),
            None => Err(Error::invalid(
                "sort key",
                format!(
                    "{:?} is not sortable; allowed: {}",
                    column.chars().take(64).collect::<String>(),
                    self.sortable
                        .iter()
                        .chain(std::iter::once(&self.id_column))
                        .map(Ident::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// One keyset page: rows after the position in `cursor` (a token from a previous page's
    /// `next_cursor`, `None` for the first page), at most `limit`. `key` extracts the sort
    /// value from a row; it must be the value of `sort`'s column. Fetches `limit + 1` rows
    /// to know whether a next page exists, and no count.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a forged, expired-key or foreign cursor, or one made for a
    /// different sort; a database error.
    pub async fn keyset_page<'c, A, K>(
        &self,
        exec: A,
        sort: &Sort,
        cursor: Option<&str>,
        limit: u32,
        codec: &CursorCodec,
        key: impl Fn(&T) -> K,
    ) -> Result<CursorPage<T>>
    where
        A: Acquire<'c, Database = Postgres>,
        K: for<'q> Encode<'q, Postgres> + Type<Postgres> + Serialize + DeserializeOwned + Send,
        T::Id: Serialize + DeserializeOwned,
    {
        let limit = limit.max(1);
        let position = match cursor {
            None => None,
            Some(token) => {
                let position: KeysetPosition<K, T::Id> = codec
                    .decode(token)
                    .map_err(|e| Error::invalid("cursor", e.to_string()))?;
                if position.sort != sort.column.as_str() || position.order != sort.order {
                    return Err(Error::invalid(
                        "cursor",
                        format!(
                            "the cursor was made for sorting by {} {:?}, not {} {:?}",
                            position.sort,
                            position.order,
                            sort.column.as_str(),
                            sort.order
                        ),
                    ));
                }
                Some(position)
            }
        };
        let (table, id, column) = (&self.table, &self.id_column, &sort.column);
        let order = sort.order.keyword();
        let fetch = i64::from(limit) + 1;
        let mut conn = Conn::open(exec, self.pooled(), &self.shared).await?;
        let query = match position {
            None => sqlx::query_as::<_, T>(sql(format!(
                "SELECT * FROM {table} ORDER BY {column} {order}, {id} {order} LIMIT $1"
            )))
            .persistent(self.named())
            .bind(fetch),
            Some(position) => sqlx::query_as::<_, T>(sql(format!(
                "SELECT * FROM {table} WHERE ({column}, {id}) {} ($1, $2) \
                 ORDER BY {column} {order}, {id} {order} LIMIT $3",
                sort.order.comparison()
            )))
            .persistent(self.named())
            .bind(position.key)
            .bind(position.id)
            .bind(fetch),
        };
        let fetched = query.fetch_all(&mut *conn);
        let mut items = self.observe_rows("keyset_page", fetched).await?;
        let has_next = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = match (has_next, items.last()) {
            (true, Some(last)) => Some(
                codec
                    .encode(&KeysetPosition {
                        sort: sort.column.as_str().to_owned(),
                        order: sort.order,
                        key: key(last),
                        id: last.id().clone(),
                    })
                    .map_err(|e| Error::invalid("cursor", e.to_string()))?,
            ),
            _ => None,
        };
        conn.finish().await?;
        Ok(CursorPage { items, next_cursor })
    }

    /// One offset page, sorted by `sort` then id. Counts only when `request` asks:
    /// [`CountMode::Exact`] runs `count(*)`, [`CountMode::Estimated`] reads the planner's
    /// row estimate (instant on big tables; falls back to an exact count when the table
    /// has never been analyzed).
    ///
    /// # Errors
    /// A database error.
    pub async fn offset_page<'c, A>(
        &self,
        exec: A,
        sort: &Sort,
        request: &PageRequest,
    ) -> Result<Page<T>>
    where
        A: Acquire<'c, Database = Postgres>,
    {
        let (table, id, column) = (&self.table, &self.id_column, &sort.column);
        let order = sort.order.keyword();
        let limit = request.limit().max(1);
        let offset = i64::try_from(request.offset()).unwrap_or(i64::MAX);
        let mut conn = Conn::open(exec, self.pooled(), &self.shared).await?;
        let fetched = sqlx::query_as::<_, T>(sql(format!(
            "SELECT * FROM {table} ORDER BY {column} {order}, {id} {order} LIMIT $1 OFFSET $2"
        )))
        .persistent(self.named())
        .bind(i64::from(limit) + 1)
        .bind(offset)
        .fetch_all(&mut *conn);
        let mut items = self.observe_rows("offset_page", fetched).await?;
        let has_next = items.len() > limit as usize;
        items.truncate(limit as usize);

        let exact = async |conn: &mut sqlx::PgConnection| -> Result<u64> {
            let count: i64 = sqlx::query_scalar(sql(format!("SELECT count(*) FROM {table}")))
                .persistent(self.named())
                .fetch_one(conn)
                .await?;
            Ok(u64::try_from(count).unwrap_or(0))
        };
        let (total, total_is_estimate) = {
            let count = async {
                Ok(match request.count() {
                    CountMode::None => (None, false),
                    CountMode::Exact => (Some(exact(&mut conn).await?), false),
                    CountMode::Estimated => {
                        let estimate: Option<f32> = sqlx::query_scalar(
                            "SELECT reltuples FROM pg_catalog.pg_class WHERE oid = to_regclass($1)",
                        )
                        .persistent(self.named())
                        .bind(table.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                        match estimate {
                            Some(rows) if rows >= 0.0 => (Some(rows.round() as u64), true),
                            _ => (Some(exact(&mut conn).await?), false),
                        }
                    }
                })
            };
            // Counting is a statement of its own in the spans and metrics, and only when asked.
            if request.count() == CountMode::None {
                (None, false)
            } else {
                self.observe("offset_page_count", |_| 1, count).await?
            }
        };
        conn.finish().await?;
        Ok(Page {
            items,
            offset: request.offset(),
            limit,
            has_next,
            total,
            total_is_estimate,
        })
    }
}

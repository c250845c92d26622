//! SQL fragments for tests that write large data sets in one statement.

/// A version-7 UUID (as `neo_core`'s typed ids require) for the integer SQL expression `row`,
/// e.g. a `generate_series` column: the statement's time in milliseconds plus `row`, the
/// version, bits from `md5(row)`, the variant. Distinct rows get distinct ids, ordered by `row`.
///
/// ```
/// let sql = format!(
///     "INSERT INTO jobs (id) SELECT {} FROM generate_series(1, 1000) AS g",
///     neo_testkit::uuid_v7_sql("g"),
/// );
/// assert!(sql.contains("md5(g::text)"));
/// ```
pub fn uuid_v7_sql(row: &str) -> String {
    format!(
        "(lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint + {row}), 12, '0') \
         || '7' || substr(md5({row}::text), 1, 3) || '8' || substr(md5({row}::text), 4, 15))::uuid"
    )
}

/// The generic plans of the statements prepared on `pool`'s one connection whose text matches
/// one of the `LIKE` patterns `like`, for tests that a statement keeps its index whatever the
/// statistics say: each is explained as `EXECUTE name(arguments(statement))` under
/// `plan_cache_mode = force_generic_plan` (a plan made without the call's values, as a
/// prepared statement gets once PostgreSQL settles on one). Returns each statement with its
/// plan in text form (`Index Scan using ...`). Prepared statements belong to a connection:
/// give it a pool of one, on which the calls under test ran.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> sqlx::Result<()> {
/// // After the calls under test ran on `pool` (one connection):
/// let plans = neo_testkit::generic_plans(&pool, &["DELETE FROM%"], |_| "'{}'".into()).await?;
/// for (statement, plan) in plans {
///     assert!(plan.contains("_pkey"), "{statement}\n{plan}");
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// A database error (e.g. `arguments` that do not fit the statement).
pub async fn generic_plans(
    pool: &sqlx::PgPool,
    like: &[&str],
    arguments: impl Fn(&str) -> String,
) -> sqlx::Result<Vec<(String, String)>> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await?;
    let prepared: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, statement FROM pg_prepared_statements \
         WHERE statement LIKE ANY($1) ORDER BY prepare_time",
    )
    .bind(like)
    .fetch_all(&mut *conn)
    .await?;
    let mut plans = Vec::with_capacity(prepared.len());
    for (name, statement) in prepared {
        // sqlx names its statements `sqlx_s_<n>`; anything else is not spliced into SQL.
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(sqlx::Error::Protocol(format!(
                "unexpected prepared statement name {name:?}"
            )));
        }
        let explain = format!("EXPLAIN EXECUTE {name}({})", arguments(&statement));
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .fetch_all(&mut *conn)
            .await?;
        plans.push((statement, lines.join("\n")));
    }
    sqlx::query("RESET plan_cache_mode")
        .execute(&mut *conn)
        .await?;
    Ok(plans)
}

/// The plan PostgreSQL makes, with the values `arguments` (SQL literals, comma-separated),
/// of the statement an idle connection to the database at `url` ran last whose text matches
/// the `LIKE` pattern `like` (`pg_stat_activity`'s `query`), for tests of statements that
/// are planned per call (an unnamed statement is planned with its call's values): the text
/// is prepared on a connection of its own and explained as `EXECUTE` under
/// `plan_cache_mode = force_custom_plan`. Returns the statement and the top node of
/// `EXPLAIN (FORMAT JSON)` (`"Node Type"`, `"Plans"`, ...).
///
/// ```no_run
/// # async fn demo(url: &str) -> sqlx::Result<()> {
/// // After the call under test ran on a connection that is now idle:
/// let (statement, plan) =
///     neo_testkit::custom_plan_of_last(url, "DELETE FROM%", "'{}'::uuid[]").await?;
/// assert_eq!(plan["Node Type"], "ModifyTable", "{statement}");
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`sqlx::Error::RowNotFound`] when no idle connection last ran such a statement; a
/// database error (e.g. `arguments` that do not fit, or a text `pg_stat_activity` cut at
/// `track_activity_query_size`).
pub async fn custom_plan_of_last(
    url: &str,
    like: &str,
    arguments: &str,
) -> sqlx::Result<(String, serde_json::Value)> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let statement: String = sqlx::query_scalar(
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND state = 'idle' AND query LIKE $1 \
         ORDER BY state_change DESC LIMIT 1",
    )
    .bind(like)
    .fetch_one(&mut conn)
    .await?;
    sqlx::query("SET plan_cache_mode = force_custom_plan")
        .execute(&mut conn)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE neo_testkit_last AS {statement}"
    )))
    .execute(&mut conn)
    .await?;
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) EXECUTE neo_testkit_last({arguments})"
    )))
    .fetch_one(&mut conn)
    .await?;
    // `json` is sent as its text.
    let text: String = row.try_get_unchecked(0)?;
    conn.close().await?;
    let mut plans: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok((statement, plans[0]["Plan"].take()))
}

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

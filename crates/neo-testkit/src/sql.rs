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

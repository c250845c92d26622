#[derive(Debug, Clone)]
struct Money {
    cents: i64,
}

#[derive(neo_db::Record)]
struct Invoice {
    id: uuid::Uuid,
    total: Money,
}

fn main() {}

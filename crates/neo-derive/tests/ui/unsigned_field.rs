#[derive(neo_db::Record)]
#[record(table = "counters")]
struct Counter {
    id: uuid::Uuid,
    hits: u64,
}

fn main() {}

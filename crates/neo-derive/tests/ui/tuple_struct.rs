#[derive(neo_db::Record)]
struct Pair(uuid::Uuid, String);

fn main() {}

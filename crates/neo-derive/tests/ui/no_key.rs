#[derive(neo_db::Record)]
struct Event {
    event_id: uuid::Uuid,
    name: String,
}

fn main() {}

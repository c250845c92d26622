#[derive(neo_db::Record)]
enum Status {
    Draft,
    Live,
}

fn main() {}

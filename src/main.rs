mod ids;
mod protocol;
mod registry;
fn main() {}

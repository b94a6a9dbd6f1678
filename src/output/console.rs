//! placeholder console (replaced by the output branch).
use super::{Event, Observer};
/// Options.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleOptions {
    /// -v
    pub verbose: bool,
    /// colour
    pub color: bool,
    /// spinners
    pub interactive: bool,
}
impl ConsoleOptions {
    /// Detect.
    pub fn detect(verbose: bool) -> ConsoleOptions {
        ConsoleOptions {
            verbose,
            color: false,
            interactive: false,
        }
    }
}
/// Console.
pub struct Console;
impl Console {
    /// New.
    pub fn new(_o: ConsoleOptions) -> Console {
        Console
    }
}
impl Observer for Console {
    fn event(&self, e: &Event) {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    }
}

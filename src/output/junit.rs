//! placeholder junit (replaced by the output branch).
use super::{Event, Observer};
/// Report.
pub struct JunitReport;
impl JunitReport {
    /// New.
    pub fn new(_p: &std::path::Path, _n: &str) -> JunitReport {
        JunitReport
    }
}
impl Observer for JunitReport {
    fn event(&self, _e: &Event) {}
}

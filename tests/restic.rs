#[path = "support/swift.rs"]
mod swift;

#[test]
fn swift_starts() {
    let s = swift::server();
    assert!(s.token().is_some());
}

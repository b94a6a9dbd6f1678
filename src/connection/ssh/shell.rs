//! Persistent shells: commands without standard input run one after another in a
//! `/bin/sh` kept open on its own channel, instead of on a new channel each. A new
//! channel costs the host an sshd session process and the login shell's start, about
//! twice what the command itself costs when it is short.
//!
//! The protocol: the channel starts `printf 'lifeboat-shell:%s\n' $$; exec /bin/sh`, so
//! the first stdout line names the shell's pid (also its process group: sshd starts each
//! session in its own). Each command is one script on the shell's stdin: the command
//! line runs under `/bin/sh -c` (as on its own channel: its own `$$`, its own variables,
//! `exit` ends only it) with stdin from `/dev/null`, then the shell prints an end tag on
//! stderr and the end tag with the exit status on stdout. The tag holds a random nonce
//! and a sequence number, so no output can forge it. A shell that times out or whose
//! caller goes away is killed with its process group and never used again; an idle
//! shell that shows any sign of having ended is dropped, not reused.

use std::sync::{Arc, Mutex as StdMutex};

use futures_util::FutureExt;
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::quote;

/// The first line of a shell's stdout, before its pid.
const HELLO: &[u8] = b"lifeboat-shell:";

/// The command that turns a fresh session channel into a persistent shell.
pub(super) const START: &str = "printf 'lifeboat-shell:%s\\n' $$; exec /bin/sh";

/// A persistent shell on its own channel, with the channel permit it holds.
pub(super) struct Shell {
    pub(super) read: ChannelReadHalf,
    pub(super) write: Arc<ChannelWriteHalf<Msg>>,
    /// The shell's pid and process group, once its first line has been read.
    pub(super) pid: Option<u32>,
    /// Stdout read before the hello line was complete.
    hello: Vec<u8>,
    nonce: String,
    seq: u64,
    pub(super) permit: OwnedSemaphorePermit,
}

impl Shell {
    /// A shell on a channel whose `START` request has been sent.
    pub(super) fn new(
        read: ChannelReadHalf,
        write: ChannelWriteHalf<Msg>,
        permit: OwnedSemaphorePermit,
    ) -> Shell {
        let nonce = crate::random::hex(16);
        Shell {
            read,
            write: Arc::new(write),
            pid: None,
            hello: Vec::new(),
            nonce,
            seq: 0,
            permit,
        }
    }

    /// The script that runs `line` where `place` says, and ends with this command's
    /// tags, and the reader of its output.
    pub(super) fn next(&mut self, line: &str, place: Place) -> (String, Frame) {
        self.seq += 1;
        let tag = format!("lifeboat-end:{}:{}", self.nonce, self.seq);
        (script(line, place, &tag), Frame::new(tag.into_bytes()))
    }

    /// Takes stdout bytes: until the hello line has been read, they are the shell's
    /// start (login noise, then the pid); what follows belongs to the command.
    pub(super) fn stdout<'a>(&mut self, data: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.pid.is_some() {
            return std::borrow::Cow::Borrowed(data);
        }
        self.hello.extend_from_slice(data);
        let Some((_, end, pid)) = marker_line(&self.hello, HELLO, false) else {
            // Keep only what could still be (the start of) the hello line.
            let keep = self.hello.len().min(HELLO.len() + 24);
            self.hello.drain(..self.hello.len() - keep);
            return std::borrow::Cow::Owned(Vec::new());
        };
        self.pid = pid.or(Some(0));
        let rest = self.hello[end..].to_vec();
        self.hello = Vec::new();
        std::borrow::Cow::Owned(rest)
    }

    /// Closes the shell's channel (the shell reads the end of its input and exits),
    /// freeing its channel permit now.
    pub(super) fn close(self) {
        let Shell {
            read,
            write,
            permit,
            ..
        } = self;
        drop(permit);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = write.eof().await;
                let _ = write.close().await;
                drop(read);
            });
        }
    }

    /// Ends the shell and whatever it runs (TERM, then KILL, to its process group),
    /// then closes its channel: for a command that timed out or was abandoned.
    pub(super) fn kill(self, live: Arc<super::Live>, permits: Arc<Semaphore>) {
        let Shell {
            read,
            write,
            permit,
            pid,
            ..
        } = self;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                super::kill_remote(live, permits, pid.filter(|p| *p > 1), write).await;
                drop(read);
                drop(permit);
            });
        }
    }

    /// Whether an idle shell is still usable: it has said nothing since its last
    /// command (stray output from a process it left behind is dropped), and its channel
    /// has not ended.
    fn still_usable(&mut self) -> bool {
        while let Some(msg) = self.read.wait().now_or_never() {
            match msg {
                None
                | Some(
                    ChannelMsg::Eof
                    | ChannelMsg::Close
                    | ChannelMsg::ExitStatus { .. }
                    | ChannelMsg::ExitSignal { .. }
                    | ChannelMsg::Failure,
                ) => return false,
                Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. }) => {
                    tracing::debug!("dropping output written to an idle shell");
                }
                Some(_) => {}
            }
        }
        true
    }
}

/// Reads one command's output off a shell's two streams, up to its end tags.
#[derive(Debug)]
pub(super) struct Frame {
    tag: Vec<u8>,
    out: Vec<u8>,
    err: Vec<u8>,
    /// The exit status, once the stdout tag's line is complete.
    pub(super) rc: Option<i32>,
    err_done: bool,
}

/// Which stream of the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Out,
    Err,
}

impl Frame {
    fn new(tag: Vec<u8>) -> Frame {
        Frame {
            tag,
            out: Vec::new(),
            err: Vec::new(),
            rc: None,
            err_done: false,
        }
    }

    /// Both tags have been read: the command is over and the shell idle again.
    pub(super) fn done(&self) -> bool {
        self.rc.is_some() && self.err_done
    }

    /// Takes bytes of one stream; returns the command's own output among them (bytes
    /// that could be the start of the tag are held back until they are known).
    pub(super) fn feed(&mut self, side: Side, data: &[u8]) -> Vec<u8> {
        let (pending, finished) = match side {
            Side::Out => (&mut self.out, self.rc.is_some()),
            Side::Err => (&mut self.err, self.err_done),
        };
        if finished {
            return Vec::new();
        }
        pending.extend_from_slice(data);
        match find(pending, &self.tag) {
            Some(i) => {
                let mine = pending[..i].to_vec();
                let rest = pending[i + self.tag.len()..].to_vec();
                match side {
                    Side::Err => {
                        self.err_done = true;
                        self.err.clear();
                    }
                    Side::Out => {
                        // ` <rc>\n` follows the tag; wait for the newline.
                        if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                            let rc = String::from_utf8_lossy(&rest[..nl]);
                            self.rc = Some(rc.trim().parse().unwrap_or(-1));
                            self.out.clear();
                        } else {
                            // Keep the tag, drop what was given out.
                            self.out.drain(..i);
                        }
                    }
                }
                mine
            }
            None => {
                let keep = partial_suffix(pending, &self.tag);
                let give = pending.len() - keep;
                pending.drain(..give).collect()
            }
        }
    }

    /// What is held back, given out when the shell ends without its tags.
    pub(super) fn leftover(&mut self, side: Side) -> Vec<u8> {
        match side {
            Side::Out if self.rc.is_none() => std::mem::take(&mut self.out),
            Side::Err if !self.err_done => std::mem::take(&mut self.err),
            _ => Vec::new(),
        }
    }
}

/// Where a kept shell runs a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// Under its own `/bin/sh -c`, as on a channel of its own: its own `$$` and
    /// variables, and `exit` ends only it.
    OwnSh,
    /// lifeboat's own scripts: evaluated in a subshell (a fork, not a new `sh`).
    Subshell,
    /// A function of lifeboat's own ([`crate::connection::Program::ShFunction`]) and
    /// its call ([`crate::connection::sh_function_call`]), run in the shell itself: no
    /// process at all.
    InShell,
}

/// The script a shell runs for one command line: the line where `place` says, with stdin
/// from `/dev/null`, then the end tag on stderr and the tag with the exit status on
/// stdout.
fn script(line: &str, place: Place, tag: &str) -> String {
    let run = match place {
        Place::OwnSh => format!("/bin/sh -c {} </dev/null", quote(line)),
        Place::Subshell => format!("( eval {} ) </dev/null", quote(line)),
        // The function's definition and call, as they are: no quoting, one parse.
        Place::InShell => format!("{line} </dev/null"),
    };
    format!(
        "{run}\n__lb_rc=$?; printf '%s\\n' {tag} >&2; printf '%s %s\\n' {tag} \"$__lb_rc\"; unset __lb_rc\n"
    )
}

/// The length of the longest end of `hay` that is a beginning of `tag`.
fn partial_suffix(hay: &[u8], tag: &[u8]) -> usize {
    let max = hay.len().min(tag.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| hay[hay.len() - n..] == tag[..n])
        .unwrap_or(0)
}

/// The line `MARKER<number>` in `buf` (at the start of a line when `line_start`): where
/// it starts, where what follows its newline starts, and the number. `None` until the
/// whole line is there.
pub(super) fn marker_line(
    buf: &[u8],
    marker: &[u8],
    line_start: bool,
) -> Option<(usize, usize, Option<u32>)> {
    let start = find(buf, marker).filter(|&i| !line_start || i == 0 || buf[i - 1] == b'\n')?;
    let nl = buf[start..].iter().position(|&b| b == b'\n')?;
    let number = std::str::from_utf8(&buf[start + marker.len()..start + nl])
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Some((start, start + nl + 1, number))
}

/// Where `needle` first occurs in `hay` (never for an empty needle).
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A connection's idle shells.
#[derive(Default)]
pub(super) struct IdleShells(StdMutex<Vec<Shell>>);

impl IdleShells {
    /// An idle shell that is still usable, if there is one.
    pub(super) fn take(&self) -> Option<Shell> {
        loop {
            let mut shell = self.0.lock().ok()?.pop()?;
            if shell.still_usable() {
                return Some(shell);
            }
            shell.close();
        }
    }

    /// Keeps a shell for the next command, unless every channel permit is taken: then
    /// someone may be waiting for one, and the shell is closed to free its own.
    pub(super) fn put(&self, shell: Shell, permits: &Semaphore) {
        if permits.available_permits() == 0 {
            shell.close();
            return;
        }
        match self.0.lock() {
            Ok(mut idle) => idle.push(shell),
            Err(_) => shell.close(),
        }
    }

    /// Closes one idle shell (freeing its channel permit); false when there is none.
    pub(super) fn evict_one(&self) -> bool {
        let shell = self.0.lock().ok().and_then(|mut idle| {
            if idle.is_empty() {
                None
            } else {
                Some(idle.remove(0))
            }
        });
        match shell {
            Some(s) => {
                s.close();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame::new(b"lifeboat-end:abc:1".to_vec())
    }

    #[test]
    fn output_ends_at_the_tags() {
        let mut f = frame();
        assert_eq!(f.feed(Side::Out, b"hello\n"), b"hello\n");
        assert_eq!(f.feed(Side::Err, b"oops lifeboat-end:abc:1\n"), b"oops ");
        assert!(!f.done());
        assert_eq!(f.feed(Side::Out, b"no newline"), b"no newline");
        assert_eq!(f.feed(Side::Out, b"lifeboat-end:abc:1 3\n"), b"");
        assert_eq!(f.rc, Some(3));
        assert!(f.done());
    }

    #[test]
    fn a_tag_cut_across_chunks_is_held_back_then_found() {
        let mut f = frame();
        assert_eq!(f.feed(Side::Out, b"data lifeboat-en"), b"data ");
        assert_eq!(f.feed(Side::Out, b"d:abc:1 "), b"");
        assert_eq!(f.rc, None);
        assert_eq!(f.feed(Side::Out, b"0\n"), b"");
        assert_eq!(f.rc, Some(0));
        // A near miss is output, not a tag.
        let mut g = frame();
        assert_eq!(g.feed(Side::Err, b"lifeboat-end:abd"), b"lifeboat-end:abd");
        assert_eq!(g.feed(Side::Err, b"lifeboat-end:ab"), b"");
        assert_eq!(g.leftover(Side::Err), b"lifeboat-end:ab");
    }

    #[test]
    fn the_hello_line_is_found_after_login_noise() {
        let buf = b"motd noise lifeboat-shell:4242\nfirst output";
        let (start, end, pid) = marker_line(buf, HELLO, false).unwrap_or_default();
        assert_eq!((start, pid), (11, Some(4242)));
        assert_eq!(&buf[end..], b"first output");
        // Not at a line start, when one is asked for; not before its newline.
        assert_eq!(marker_line(buf, HELLO, true), None);
        assert_eq!(marker_line(b"lifeboat-shell:42", HELLO, false), None);
    }

    #[test]
    fn another_commands_tag_is_output() {
        let mut f = frame();
        assert_eq!(
            f.feed(Side::Out, b"lifeboat-end:abc:2 0\n"),
            b"lifeboat-end:abc:2 0\n"
        );
        assert_eq!(f.rc, None);
    }

    #[test]
    fn scripts_quote_the_line_and_end_with_the_tags() {
        let line = "echo 'it''s' $(id) \"$1\"";
        let sub = script(line, Place::Subshell, "lifeboat-end:n:7");
        assert!(
            sub.starts_with(&format!("( eval {} ) </dev/null\n", quote(line))),
            "{sub}"
        );
        let s = script(line, Place::OwnSh, "lifeboat-end:n:7");
        assert!(
            s.starts_with(&format!("/bin/sh -c {} </dev/null\n", quote(line))),
            "{s}"
        );
        // A function and its call are written as they are, input redirected for the call.
        let f = script("__lb_fn() {\nreturn 3\n}\n__lb_fn", Place::InShell, "t");
        assert!(
            f.starts_with("__lb_fn() {\nreturn 3\n}\n__lb_fn </dev/null\n"),
            "{f}"
        );
        assert!(s.contains("printf '%s\\n' lifeboat-end:n:7 >&2"), "{s}");
        assert!(
            s.ends_with("printf '%s %s\\n' lifeboat-end:n:7 \"$__lb_rc\"; unset __lb_rc\n"),
            "{s}"
        );
    }
}

//! Sending pools (issue 6): work in progress.

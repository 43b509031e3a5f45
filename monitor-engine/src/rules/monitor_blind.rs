//! monitor_blind (critical): a kernel map is full, so what its writes were for is no longer
//! fully seen or enforced in the kernel. Once per episode: a map that keeps failing raises one
//! finding until it has gone [`QUIET_NS`] without a new failure.

/// How long a map must go without a failed write before a new failure is a new episode.
pub(crate) const QUIET_NS: u64 = 60_000_000_000;

/// What a full map costs, for the finding's detail.
pub(crate) fn detail(map: &str, failures: u64) -> String {
    let consequence = match map {
        "TASK_OF" => {
            "the task membership of new processes cannot be recorded; processes the kernel knows in no task are \
             judged as members of another task from now on"
        }
        "HOLDERS" => "secret holdings cannot be recorded; every task member's connects are reported from now on",
        "WATCHED" => "more secret files cannot be watched; opens of the ones left out are not seen",
        "GRANTEES" => {
            "a secret's owners cannot be recorded; that secret is enforced by the daemon after the open instead \
             of in the kernel"
        }
        "VERDICTS" => "a kill verdict cannot be recorded; the daemon's own kill still applies",
        "ALLOWED_DESTINATIONS" => {
            "a task's allow list cannot be recorded; its connects are judged by the daemon only, not refused in \
             the kernel"
        }
        _ => "what the map records is no longer fully seen",
    };
    format!("the kernel map {map} is full ({failures} failed writes so far): {consequence}")
}

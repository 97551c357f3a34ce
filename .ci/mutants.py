#!/usr/bin/env python3
"""Proves the simulator can fail: applies deliberately broken variants of the core, one at a time, and runs
the simulation on each. A mutant is *caught* when the simulation fails (an invariant, the linearizability
check or liveness), *missed* when it passes.

Opt-in (it rebuilds the crate once per mutant):

    python3 .ci/mutants.py                      # every mutant, 300 seeds each
    SIM_SEEDS=1000 python3 .ci/mutants.py vote  # mutants whose name contains "vote"

It works on a scratch copy of the tree (a git worktree of HEAD plus the working tree's src/ and tests/),
never on the tree itself.
"""

import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRATCH = os.environ.get("MUTANTS_DIR", "/tmp/tickraft-mutants")
SEEDS = os.environ.get("SIM_SEEDS", "300")

# (name, file, original text, broken text). Each original must occur exactly once.
MUTANTS = [
    (
        "commit-previous-term-by-counting",
        "src/core/mod.rs",
        "let advanced = self.log.maybe_commit(index, self.term)?;",
        "let advanced = { let t = self.log.term_if_present(index)?.unwrap_or(self.term); self.log.maybe_commit(index, t)? };",
    ),
    (
        "ack-append-before-durable",
        "src/core/mod.rs",
        """            self.incoming_snapshot = None; // the log caught up past it: a half-received snapshot is moot
        }
        self.send_after_persist(""",
        """            self.incoming_snapshot = None; // the log caught up past it: a half-received snapshot is moot
        }
        self.send_now(""",
    ),
    (
        "grant-two-votes-in-one-term",
        "src/core/mod.rs",
        "let can_vote = self.vote == Some(from)\n            || (self.vote.is_none() && self.leader.is_none())",
        "let can_vote = self.vote == Some(from)\n            || self.leader.is_none()",
    ),
    (
        "vote-for-a-stale-log",
        "src/core/mod.rs",
        "let granted = can_vote && self.log.is_up_to_date(req.last_log)?;",
        "let granted = can_vote;",
    ),
    (
        "leader-counts-itself-before-durable",
        "src/core/log.rs",
        "        Ok(self.storage.last_index()?.min(self.unstable.offset - 1))",
        "        self.last_index()",
    ),
    (
        "follower-skips-the-log-matching-check",
        "src/core/mod.rs",
        "        if !self.log.matches(req.prev)? {",
        "        if req.prev.index > self.log.last_index()? {",
    ),
    (
        "read-before-commit-in-term",
        "src/core/mod.rs",
        "Ok(self.log.term_if_present(self.log.committed)? == Some(self.term))",
        "Ok(true)",
    ),
    (
        "read-without-quorum-confirmation",
        "src/core/mod.rs",
        "        if quorum_is_me || lease_holds {",
        "        if true {",
    ),
    (
        "stale-term-messages-accepted",
        "src/core/mod.rs",
        "        } else if message.term < self.term {\n            return self.step_stale(from, message);\n        }",
        "        }",
    ),
    (
        "vote-request-does-not-persist-term",
        "src/core/mod.rs",
        "let must_sync = !entries.is_empty() || snapshot.is_some() || term_or_vote_changed;",
        "let must_sync = !entries.is_empty() || snapshot.is_some();",
    ),
    (
        "leader-speaks-before-its-term-is-durable",
        "src/core/mod.rs",
        "if term_or_vote_changed && !messages.is_empty() {",
        "if false && term_or_vote_changed && !messages.is_empty() {",
    ),
    # (Applying committed entries up to the last index instead of the durable one is not in this list: with
    # one outstanding Ready, entries handed out to apply are always persisted by that same Ready first, so
    # the variant is equivalent, merely one cycle faster.)
    (
        "follower-commits-past-the-last-new-entry",
        "src/core/mod.rs",
        "self.log.commit_to(req.commit.min(last_new))?;",
        "self.log.commit_to(req.commit.min(self.log.last_index()?))?;",
    ),
    (
        "joint-consensus-counts-only-the-new-half",
        "src/core/quorum.rs",
        "    majority_committed(incoming, acked).min(majority_committed(outgoing, acked))",
        "    let _ = outgoing;\n    majority_committed(incoming, acked)",
    ),
]


def run(cmd, cwd, env=None, timeout=None):
    return subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True)


def prepare():
    if os.path.exists(SCRATCH):
        shutil.rmtree(SCRATCH)
    shutil.copytree(
        ROOT,
        SCRATCH,
        ignore=shutil.ignore_patterns("target", ".git", "book"),
    )


def main():
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    prepare()
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = os.environ.get("MUTANTS_TARGET", "/tmp/tickraft-mutants-target")
    env["SIM_SEEDS"] = SEEDS
    results = []
    for name, path, original, broken in MUTANTS:
        if wanted not in name:
            continue
        file = os.path.join(SCRATCH, path)
        with open(file) as f:
            text = f.read()
        if text.count(original) != 1:
            results.append((name, "NOT APPLIED (source changed)", 0.0))
            continue
        with open(file, "w") as f:
            f.write(text.replace(original, broken))
        started = time.time()
        try:
            out = run(
                ["cargo", "test", "--release", "-p", "tickraft", "--test", "simulation",
                 "--", "--ignored", "--exact", "soak_many_seeds"],
                SCRATCH, env, timeout=3600,
            )
            build_failed = "could not compile" in out.stderr
            verdict = "BUILD FAILED" if build_failed else ("caught" if out.returncode != 0 else "MISSED")
        except subprocess.TimeoutExpired:
            verdict = "caught (hang)"
        with open(file, "w") as f:
            f.write(text)
        results.append((name, verdict, time.time() - started))
        print(f"{name:<44} {verdict:<14} {time.time() - started:6.0f} s", flush=True)
    caught = sum(1 for _, v, _ in results if v.startswith("caught"))
    print(f"\n{caught} of {len(results)} mutants caught with {SEEDS} seeds each")
    return 0


if __name__ == "__main__":
    sys.exit(main())

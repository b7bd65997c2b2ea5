//! netsim: many real btd nodes in one process, with faults and invariant checks.
//!
//! Empty until the "netsim" issue: it drives the daemon's real core, which arrives with "The mesh".

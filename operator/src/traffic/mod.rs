//! Traffic routers. In replica-ratio mode the split is the replica counts of the plan (the entry
//! Service selects every worker revision), so there is nothing to write here; in Gateway API
//! mode the operator sets HTTPRoute backendRef weights.

pub mod httproute;

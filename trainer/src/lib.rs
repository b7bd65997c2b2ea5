//! btd's local compute layer.
//!
//! Nothing lives here yet: candle training, `val_bpb` evaluation of checkpoints, the shell adapter and
//! rung detection arrive with the "Local compute" issue. The metric's definition itself is a protocol
//! rule and lives in `btd_protocol::metric`.

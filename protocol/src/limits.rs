//! Every limit the wire protocol enforces, named once.
//!
//! A limit here is a hard ceiling checked where bytes enter (the decoder). Operators can
//! lower the text limit per deployment (the edge enforces it and tells clients in
//! `Welcome`), but never raise it above [`TEXT_BYTES_MAX_CEILING`].

/// Default maximum size of a message's text in bytes (UTF-8).
pub const TEXT_BYTES_MAX_DEFAULT: usize = 4 * 1024;
/// The most an operator may configure as the text limit.
pub const TEXT_BYTES_MAX_CEILING: usize = 64 * 1024;
/// The largest encoded frame any decoder accepts, checked before allocating. Large enough
/// for a message at the text ceiling plus its envelope, or a full edge delivery list.
pub const FRAME_BYTES_MAX: usize = TEXT_BYTES_MAX_CEILING + 16 * 1024;
/// Longest user id (the JWT `sub`), in bytes.
pub const USER_ID_BYTES_MAX: usize = 128;
/// Longest display name (the JWT `name`), in bytes.
pub const DISPLAY_NAME_BYTES_MAX: usize = 128;
/// Longest token a client may present, in bytes.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Longest human-readable detail in an error or rejection, in bytes.
pub const DETAIL_BYTES_MAX: usize = 512;
/// Longest edge name in `EdgeHello`, in bytes.
pub const EDGE_NAME_BYTES_MAX: usize = 128;
/// Most id ranges in one acknowledgement frame.
pub const ACK_RANGES_MAX: usize = 512;
/// Most recipient sessions named in one core→edge delivery.
pub const DELIVER_SESSIONS_MAX: usize = 1024;
/// Default number of message lanes (unidirectional streams) in each direction.
pub const LANES_DEFAULT: u8 = 8;
/// Most lanes a peer may ask for.
pub const LANES_MAX: u8 = 64;

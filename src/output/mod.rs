//! What a run leaves behind: the annotated pcapng file and the ladder diagram.

pub mod dest;
pub mod figure;
pub mod ladder;
pub mod pcapng;
pub mod style;
pub mod svg;
pub mod text;

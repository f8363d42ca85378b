//! A plugin that misuses memory, for tests of the host's limits and of
//! isolation between messages:
//!
//! - a payload containing `hog` allocates without bound, until the memory
//!   limit stops it;
//! - a payload containing `scribble` first checks that every page of two
//!   static areas — one in the memory image (initialised data), one past it
//!   (zeroed) — still holds its initial contents, dead-lettering with
//!   "leaked state from an earlier message" if not; then writes a mark into
//!   every other page of both, a few hundred disjoint dirty regions, and
//!   acknowledges. Under message isolation every instance must find the
//!   areas pristine; an instance reused for a second message finds its own
//!   marks;
//! - anything else is acknowledged.

use switchyard_sdk::{Message, Outcome, Plugin};

/// The host resets memory in its own pages (4 KiB), not in wasm's (64 KiB):
/// marking every other host page makes each mark a dirty region of its own,
/// 128 an area.
const HOST_PAGE: usize = 4 << 10;
const AREA: usize = 1 << 20;

/// In the memory image: every byte 1 until written.
static mut IMAGE: [u8; AREA] = [1; AREA];
/// Past the image: every byte 0 until written.
static mut ZEROED: [u8; AREA] = [0; AREA];

struct Hog;

impl Plugin for Hog {
    fn handle(msg: Message) -> Outcome {
        if msg.payload.windows(3).any(|w| w == b"hog") {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                chunks.push(vec![0xA5; 1 << 20]);
                core::hint::black_box(&mut chunks);
            }
        }
        if msg.payload.windows(8).any(|w| w == b"scribble") {
            // SAFETY: a component instance runs one call at a time, on one
            // thread: nothing else touches these statics meanwhile.
            let (image, zeroed) = unsafe {
                (
                    &mut *core::ptr::addr_of_mut!(IMAGE),
                    &mut *core::ptr::addr_of_mut!(ZEROED),
                )
            };
            let image = core::hint::black_box(image);
            let zeroed = core::hint::black_box(zeroed);
            if image.iter().any(|b| *b != 1) || zeroed.iter().any(|b| *b != 0) {
                return Outcome::dead_letter("leaked state from an earlier message");
            }
            for page in (0..AREA).step_by(2 * HOST_PAGE) {
                image[page] = 0xEE;
                zeroed[page] = 0xEE;
            }
        }
        Outcome::Ack
    }
}

switchyard_sdk::export_plugin!(Hog);

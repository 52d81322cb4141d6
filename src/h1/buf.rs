//! Pooled IO buffers (DESIGN.md §19): each worker thread keeps its own pool of fixed-size
//! buffers ([`BUF_SIZE`], 16 KiB, like HAProxy's `tune.bufsize`). A connection takes one just
//! before it reads and gives it back (drops it) as soon as everything in it was consumed, so a
//! connection waiting for readability holds no buffer and memory follows the bytes in flight,
//! not the connections open.
//!
//! Owns: buffer memory for the HTTP/1.1 codec and the cursors over it. Must not touch: sockets,
//! parsing. `take` allocates only when the thread's pool is empty; a thread keeps at most
//! [`MAX_IDLE`] idle buffers and frees the rest.

use std::cell::RefCell;

/// The size of every pooled buffer; a request head must fit one (`max_header_size` is at most
/// this much when the engine reads heads into pooled buffers).
pub const BUF_SIZE: usize = 16 * 1024;

/// The most idle buffers one thread keeps (4 MiB at 16 KiB each); more are freed.
pub const MAX_IDLE: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// Takes a buffer from this thread's pool, allocating one only if the pool is empty. It starts
/// empty (no bytes filled) and goes back to the pool of the thread that drops it.
pub fn take() -> Buf {
    let mem = POOL
        .try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
    Buf {
        mem: Some(mem),
        start: 0,
        end: 0,
    }
}

/// The idle buffers in this thread's pool.
pub fn idle() -> usize {
    POOL.try_with(|p| p.borrow().len()).unwrap_or(0)
}

/// Gives back the buffer in `slot` if it holds no unconsumed bytes: what a connection does
/// before it waits for readability again.
pub fn release_if_empty(slot: &mut Option<Buf>) {
    if slot.as_ref().is_some_and(Buf::is_empty) {
        *slot = None;
    }
}

/// A pooled buffer: `BUF_SIZE` bytes, of which `start..end` are filled and not yet consumed.
/// Reads go into [`Buf::spare_mut`] and are committed with [`Buf::filled`]; parsing reads
/// [`Buf::data`] and [`Buf::consume`]s what it used.
#[derive(Debug)]
pub struct Buf {
    /// Always `Some` until dropped (taken out in `drop` to go back to the pool).
    mem: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl Buf {
    fn mem(&self) -> &[u8] {
        self.mem.as_deref().unwrap_or_default()
    }

    /// The filled, unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.mem()[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.mem().len()
    }

    /// The free room after the filled bytes, to read into. Moves the unconsumed bytes to the
    /// front first when that makes room (a head that arrives in pieces stays contiguous).
    pub fn spare_mut(&mut self) -> &mut [u8] {
        if self.start > 0 {
            let (start, end) = (self.start, self.end);
            if let Some(mem) = self.mem.as_deref_mut() {
                mem.copy_within(start..end, 0);
            }
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        match self.mem.as_deref_mut() {
            Some(mem) => &mut mem[end..],
            None => &mut [],
        }
    }

    /// Commits `n` bytes read into [`Buf::spare_mut`].
    pub fn filled(&mut self, n: usize) {
        assert!(self.end + n <= self.capacity(), "filled past the buffer");
        self.end += n;
    }

    /// Marks the first `n` unconsumed bytes as used. An empty buffer starts over at the front.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed more than filled");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves the unconsumed bytes into memory of `size` bytes (more than [`BUF_SIZE`]; not
    /// pooled, freed when dropped): a head larger than a pooled buffer but within its limit.
    pub fn grow(&mut self, size: usize) {
        if size <= self.capacity() {
            return;
        }
        let mut mem = vec![0u8; size].into_boxed_slice();
        let n = self.len();
        mem[..n].copy_from_slice(self.data());
        // The old memory goes back to the pool.
        drop(Buf {
            mem: self.mem.replace(mem),
            start: 0,
            end: 0,
        });
        self.start = 0;
        self.end = n;
    }

    /// Whether there is no room left to read into (after moving unconsumed bytes to the front).
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// The buffer's memory address (tests check that a buffer is reused).
    pub fn as_ptr(&self) -> *const u8 {
        self.mem().as_ptr()
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let Some(mem) = self.mem.take() else { return };
        // At thread exit the pool may be gone: then the buffer is just freed.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < MAX_IDLE && mem.len() == BUF_SIZE {
                p.push(mem);
            }
        });
    }
}

/// A value whose boxes a thread keeps for reuse ([`Boxed`]): the codec's heads, whose field
/// tables are 2 KiB each — taken from the pool, a request's state does not build and copy
/// them anew.
pub trait Poolable: Default + 'static {
    /// This type's per-thread pool.
    fn pool() -> &'static std::thread::LocalKey<BoxPool<Self>>;
}

/// A per-thread pool of boxes. Boxes, not values: a box moves in and out of the pool as a
/// pointer, a value would be copied whole each way.
#[allow(clippy::vec_box)]
pub type BoxPool<T> = RefCell<Vec<Box<T>>>;

/// A box from its type's per-thread pool, given back when dropped. Its content is whatever the
/// last user left: the heads are overwritten whole by their parse.
pub struct Boxed<T: Poolable>(Option<Box<T>>);

impl<T: Poolable> Boxed<T> {
    /// Takes a box from this thread's pool, allocating one only if the pool is empty.
    pub fn take() -> Boxed<T> {
        let b = T::pool()
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        Boxed(Some(b))
    }
}

impl<T: Poolable> std::ops::Deref for Boxed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0
            .as_deref()
            .expect("a pooled box is there until dropped")
    }
}

impl<T: Poolable> std::ops::DerefMut for Boxed<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0
            .as_deref_mut()
            .expect("a pooled box is there until dropped")
    }
}

impl<T: Poolable> Drop for Boxed<T> {
    fn drop(&mut self) {
        let Some(b) = self.0.take() else { return };
        let _ = T::pool().try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < MAX_IDLE {
                p.push(b);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test runs on a thread of its own, so it starts with an empty pool.
    fn fresh<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn a_dropped_buffer_is_the_next_one_taken() {
        fresh(|| {
            assert_eq!(idle(), 0);
            let a = take();
            assert_eq!(a.capacity(), BUF_SIZE);
            let ptr = a.as_ptr();
            drop(a);
            assert_eq!(idle(), 1);
            let b = take();
            assert_eq!(b.as_ptr(), ptr, "the same allocation came back");
            assert_eq!(idle(), 0);
            assert!(b.is_empty(), "a reused buffer starts empty");
            // Two at once: the second is a new allocation.
            let c = take();
            assert_ne!(c.as_ptr(), ptr);
        });
    }

    #[test]
    fn a_dropped_head_box_is_the_next_one_taken() {
        fresh(|| {
            let a: Boxed<crate::h1::RequestHead> = Boxed::take();
            let ptr: *const crate::h1::RequestHead = &*a;
            drop(a);
            let b: Boxed<crate::h1::RequestHead> = Boxed::take();
            assert_eq!(&*b as *const _, ptr, "the same box came back");
            let c: Boxed<crate::h1::RequestHead> = Boxed::take();
            assert_ne!(&*c as *const _, ptr);
        });
    }

    #[test]
    fn the_pool_keeps_at_most_max_idle() {
        fresh(|| {
            let bufs: Vec<Buf> = (0..MAX_IDLE + 10).map(|_| take()).collect();
            assert_eq!(idle(), 0);
            drop(bufs);
            assert_eq!(idle(), MAX_IDLE, "the rest were freed");
            let again: Vec<Buf> = (0..MAX_IDLE).map(|_| take()).collect();
            assert_eq!(idle(), 0);
            drop(again);
            assert_eq!(idle(), MAX_IDLE);
        });
    }

    #[test]
    fn pools_are_per_thread() {
        fresh(|| {
            drop(take());
            assert_eq!(idle(), 1);
            let other = std::thread::spawn(idle).join().unwrap();
            assert_eq!(other, 0);
            // A buffer dropped on another thread goes to that thread's pool.
            let b = take();
            assert_eq!(idle(), 0);
            let there = std::thread::spawn(move || {
                drop(b);
                idle()
            })
            .join()
            .unwrap();
            assert_eq!(there, 1);
            assert_eq!(idle(), 0);
        });
    }

    #[test]
    fn cursors_fill_consume_and_compact() {
        fresh(|| {
            let mut b = take();
            b.spare_mut()[..5].copy_from_slice(b"hello");
            b.filled(5);
            assert_eq!(b.data(), b"hello");
            b.consume(2);
            assert_eq!(b.data(), b"llo");
            assert_eq!(b.spare_mut().len(), BUF_SIZE - 3, "compacted to the front");
            assert_eq!(b.data(), b"llo");
            b.spare_mut()[..2].copy_from_slice(b"!!");
            b.filled(2);
            assert_eq!(b.data(), b"llo!!");
            b.consume(5);
            assert!(b.is_empty());
            assert_eq!(b.spare_mut().len(), BUF_SIZE);

            let mut slot = Some(b);
            slot.as_mut().unwrap().filled(1);
            release_if_empty(&mut slot);
            assert!(slot.is_some(), "a buffer with bytes in it is kept");
            slot.as_mut().unwrap().consume(1);
            release_if_empty(&mut slot);
            assert!(slot.is_none());
            assert_eq!(idle(), 1);
        });
    }

    #[test]
    #[should_panic(expected = "consumed more than filled")]
    fn consuming_too_much_panics() {
        let mut b = take();
        b.consume(1);
    }
}

//! The KME-to-KME link: how both nodes cut the same bits for the same key ID.
//!
//! Alice's KME is the *sequencer*: every cut, whichever side's SAE asked, is decided by her,
//! numbered, and applied by both nodes in number order; her SAEs' orders that queue while a
//! step is out go as the next step, planned one after the other and applied in one transaction
//! at each node (group commit). When her SAE is master she sends the cut and serves it only
//! once Bob has applied it (so his slave can fetch it); when his is, she applies it first
//! (reserving the keys for her slave) and Bob serves it on receipt. Alice cuts only blocks Bob
//! has settled (committed or forgotten as she did), so he holds every bit she names.
//!
//! After any break both sides say how far their logs go and send each other the cuts the other
//! lacks. The side that lacks a cut was its master and never answered its SAE (it serves only
//! after its own apply), so both discard that cut's keys: nothing reserved for an answer that
//! never left is delivered later, and both cursors end in the same place. A cut the sequencer
//! sent without an answer in time breaks the link, so the numbering cannot fork.
//!
//! The link runs over mutual TLS with the KMEs' certificates; the peer must present the
//! configured KME ID. Its messages carry no key bits, only where keys lie in the pool. (The
//! node's Wegman-Carter channel is a strict request-response session between post-processing
//! steps; a KME answering in milliseconds cannot wait for it. An adversary who could forge this
//! link could equally impersonate an SAE to its KME, which is TLS too, so the link adds no
//! weaker step.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use qkd_runtime::messages::BlockId;
use qkd_runtime::randomness::ProtocolRng;
use qkd_store::Store;
use qkd_store::StoreFailure;
use qkd_store::pool::{CutRecord, Fate, KeyCut, Segment, ServedKey};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Largest link frame accepted (a request's cut of `max_key_per_request` keys fits easily).
const MAX_FRAME: usize = 4 << 20;
/// How long the sequencer waits for the follower to apply a cut before breaking the link.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the follower looks for newly settled blocks.
const SETTLED_EVERY: Duration = Duration::from_millis(100);
/// Most cuts waiting at the sequencer.
const QUEUE: usize = 4096;
/// Most cuts sent and applied as one step (one write to disk at each node): the orders that
/// queued while the last step was out.
const BATCH: usize = 64;

/// Which end of the link this KME is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Alice's: decides every cut.
    Sequencer,
    /// Bob's: asks for cuts and follows.
    Follower,
}

/// Keys an SAE asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The asking (master) SAE.
    pub master: String,
    /// The SAE the keys are for.
    pub slave: String,
    /// How many.
    pub count: u32,
    /// Bits each.
    pub bits: u64,
}

/// Why an order gave no keys.
#[derive(Debug, thiserror::Error)]
pub enum OrderFailure {
    /// The pool holds too few bits.
    #[error("the key pool holds {available_bits} bits, fewer than asked for")]
    NotEnough {
        /// Uncut bits in the pool.
        available_bits: u64,
    },
    /// The peer KME is not connected.
    #[error("the peer KME is not connected")]
    PeerDown,
    /// The peer could not apply the cut.
    #[error("the peer KME refused the cut: {0}")]
    PeerRefused(String),
    /// This node's store failed.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// This node could not apply the cut (the pools disagree).
    #[error("the key pools disagree: {0}")]
    Disagree(String),
    /// No randomness for key IDs.
    #[error(transparent)]
    Randomness(#[from] qkd_runtime::randomness::RandomnessError),
}

/// Why the link broke.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Reading or writing the connection failed.
    #[error("link connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than allowed.
    #[error("link frame of {0} bytes is over the limit")]
    TooLong(usize),
    /// A frame that does not decode.
    #[error("link frame does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// The peer broke the protocol.
    #[error("the peer KME sent {0} out of place")]
    Protocol(&'static str),
    /// The peer did not apply a cut in time.
    #[error("the peer KME did not apply cut {0} within {APPLY_TIMEOUT:?}")]
    Timeout(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// The peer's log contradicts this one.
    #[error("the key pools disagree: {0}")]
    Disagree(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Message {
    /// First each way: how far this side's log goes, and (follower) its settled blocks.
    Hello {
        last_cut: Option<u64>,
        settled_through: Option<BlockId>,
    },
    /// Second each way: the cuts the other side lacks.
    CatchUp(Vec<CutRecord>),
    /// Sequencer → follower: apply these consecutive cuts, in one step; the sequencer's SAEs
    /// are their masters.
    Reserve(Vec<CutRecord>),
    /// Follower → sequencer: applied, through cut `seq`.
    Applied { seq: u64 },
    /// Follower → sequencer: could not apply the cuts from `seq`.
    Refused { seq: u64, reason: String },
    /// Follower → sequencer: cut keys for the follower's SAE.
    Cut { request: u64, order: Order },
    /// Sequencer → follower: cut (applied on the sequencer, reserved for her slave).
    CutMade { request: u64, record: CutRecord },
    /// Sequencer → follower: the pool is too small.
    CutRefused { request: u64, available_bits: u64 },
    /// Either way: discard this cut's reserved keys (its master never answered).
    Discard { seq: u64 },
    /// Follower → sequencer: blocks settled so far.
    Settled { through: Option<BlockId> },
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::CatchUp(_) => "CatchUp",
            Message::Reserve(_) => "Reserve",
            Message::Applied { .. } => "Applied",
            Message::Refused { .. } => "Refused",
            Message::Cut { .. } => "Cut",
            Message::CutMade { .. } => "CutMade",
            Message::CutRefused { .. } => "CutRefused",
            Message::Discard { .. } => "Discard",
            Message::Settled { .. } => "Settled",
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(out: &mut W, message: &Message) -> Result<(), LinkError> {
    let bytes = postcard::to_allocvec(message)?;
    out.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    out.write_all(&bytes).await?;
    out.flush().await?;
    Ok(())
}

async fn read<R: AsyncRead + Unpin>(input: &mut R) -> Result<Message, LinkError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(LinkError::TooLong(len));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes).await?;
    Ok(postcard::from_bytes(&bytes)?)
}

type Reply = oneshot::Sender<Result<Vec<ServedKey>, OrderFailure>>;

/// A KME's handle on the link.
#[derive(Debug, Clone)]
pub struct Link {
    orders: mpsc::Sender<(Order, Reply)>,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    connected: bool,
    /// The follower's settled blocks as last heard (sequencer), or read (follower).
    settled_through: Option<BlockId>,
}

impl Link {
    /// A link and the receiving end its driver ([`Link::drive`]) serves.
    pub fn new() -> (Self, LinkDriver) {
        let (orders, incoming) = mpsc::channel(QUEUE);
        let shared = Arc::new(Mutex::new(Shared::default()));
        (
            Link {
                orders,
                shared: Arc::clone(&shared),
            },
            LinkDriver { incoming, shared },
        )
    }

    /// Cuts keys for `order` and serves them (the caller's SAE is the master).
    pub async fn order(&self, order: Order) -> Result<Vec<ServedKey>, OrderFailure> {
        let (reply, answer) = oneshot::channel();
        self.orders
            .send((order, reply))
            .await
            .map_err(|_| OrderFailure::PeerDown)?;
        answer.await.unwrap_or(Err(OrderFailure::PeerDown))
    }

    /// Whether the peer KME is connected.
    pub fn connected(&self) -> bool {
        self.lock().connected
    }

    /// The last block both nodes hold settled, as far as this KME knows.
    pub fn settled_through(&self) -> Option<BlockId> {
        self.lock().settled_through
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

/// The shared state, even after a panic elsewhere (it holds only flags).
fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The link's driving end: runs sessions over connections, answers orders meanwhile.
#[derive(Debug)]
pub struct LinkDriver {
    incoming: mpsc::Receiver<(Order, Reply)>,
    shared: Arc<Mutex<Shared>>,
}

/// Key IDs: random (version 4) UUIDs from the operating system's generator.
fn key_id(rng: &mut ProtocolRng) -> String {
    let (high, low) = (rng.next_u64(), rng.next_u64());
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// Cuts the sequencer has sent and awaits, each with the SAE's reply; the first and last
/// numbers they span.
struct InFlight {
    cuts: Vec<(CutRecord, Reply)>,
    deadline: tokio::time::Instant,
}

impl InFlight {
    fn seqs(&self) -> (u64, u64) {
        let seq = |i: Option<&(CutRecord, Reply)>| i.map_or(0, |(r, _)| r.seq);
        (seq(self.cuts.first()), seq(self.cuts.last()))
    }
}

/// Work waiting at the sequencer.
enum Work {
    Own(Order, Reply),
    Peer { request: u64, order: Order },
}

impl LinkDriver {
    fn set(&self, update: impl FnOnce(&mut Shared)) {
        update(&mut lock(&self.shared));
    }

    /// Waits for the next order while unconnected and refuses it; returns when `connected`
    /// resolves.
    pub async fn refuse_until<T>(&mut self, connected: impl Future<Output = T>) -> T {
        tokio::pin!(connected);
        loop {
            tokio::select! {
                value = &mut connected => return value,
                Some((_, reply)) = self.incoming.recv() => {
                    let _ = reply.send(Err(OrderFailure::PeerDown));
                }
            }
        }
    }

    /// Runs one session over `stream` until it breaks.
    pub async fn session<S>(
        &mut self,
        side: Side,
        store: &Store,
        stream: S,
    ) -> Result<(), LinkError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut input, mut output) = tokio::io::split(stream);
        let settled = match side {
            Side::Follower => store.settled_through()?,
            Side::Sequencer => None,
        };
        write(
            &mut output,
            &Message::Hello {
                last_cut: store.last_cut()?,
                settled_through: settled,
            },
        )
        .await?;
        let Message::Hello {
            last_cut: peer_last,
            settled_through: peer_settled,
        } = read(&mut input).await?
        else {
            return Err(LinkError::Protocol("something before Hello"));
        };
        write(&mut output, &Message::CatchUp(store.cuts_after(peer_last)?)).await?;
        let Message::CatchUp(missing) = read(&mut input).await? else {
            return Err(LinkError::Protocol("something before CatchUp"));
        };
        for record in missing {
            // This side was the master and never answered: nobody gets these keys.
            match store.apply_cut(&record, Fate::Discard)? {
                Ok(_) => write(&mut output, &Message::Discard { seq: record.seq }).await?,
                Err(refusal) => return Err(LinkError::Disagree(refusal.to_string())),
            }
        }
        // Reads run in their own task: a half-read frame must survive select's other arms.
        let (frames, mut received) = mpsc::channel(64);
        let _reader = AbortOnDrop(tokio::spawn(async move {
            loop {
                let frame = read(&mut input).await;
                let end = frame.is_err();
                if frames.send(frame).await.is_err() || end {
                    return;
                }
            }
        }));
        self.set(|s| {
            s.connected = true;
            s.settled_through = match side {
                Side::Sequencer => peer_settled,
                Side::Follower => settled,
            };
        });
        let _connected = Connected(Arc::clone(&self.shared));
        match side {
            Side::Sequencer => self.sequence(store, &mut output, &mut received).await,
            Side::Follower => self.follow(store, &mut output, &mut received).await,
        }
    }

    async fn sequence<W: AsyncWrite + Unpin>(
        &mut self,
        store: &Store,
        output: &mut W,
        received: &mut mpsc::Receiver<Result<Message, LinkError>>,
    ) -> Result<(), LinkError> {
        let mut rng = ProtocolRng::from_os().map_err(|e| LinkError::Disagree(e.to_string()))?;
        let mut queue: VecDeque<Work> = VecDeque::new();
        let mut in_flight: Option<InFlight> = None;
        loop {
            while in_flight.is_none() && !queue.is_empty() {
                in_flight = self.start(store, output, &mut rng, &mut queue).await?;
            }
            let deadline = in_flight.as_ref().map(|f| f.deadline);
            tokio::select! {
                frame = received.recv() => {
                    let Some(frame) = frame else { return Ok(()) };
                    match frame? {
                        Message::Applied { seq } => {
                            let flight = in_flight.take().filter(|f| f.seqs().1 == seq)
                                .ok_or(LinkError::Protocol("Applied"))?;
                            finish(store, output, flight.cuts).await?;
                        }
                        Message::Refused { seq, reason } => {
                            let flight = in_flight.take().filter(|f| f.seqs().0 == seq)
                                .ok_or(LinkError::Protocol("Refused"))?;
                            for (_, reply) in flight.cuts {
                                let _ = reply.send(Err(OrderFailure::PeerRefused(reason.clone())));
                            }
                        }
                        Message::Cut { request, order } => queue.push_back(Work::Peer { request, order }),
                        Message::Discard { seq } => store.discard_cut(seq)?,
                        Message::Settled { through } => self.set(|s| s.settled_through = through),
                        other => return Err(LinkError::Protocol(other.name())),
                    }
                }
                order = self.incoming.recv(), if queue.len() < QUEUE => {
                    let Some((order, reply)) = order else { return Ok(()) };
                    queue.push_back(Work::Own(order, reply));
                }
                () = sleep_until(deadline) => {
                    let seq = in_flight.as_ref().map_or(0, |f| f.seqs().0);
                    return Err(LinkError::Timeout(seq));
                }
            }
        }
    }

    /// Plans the next step at the sequencer: a peer's order, applied and sent; or the orders of
    /// her SAEs that queued meanwhile, planned one after the other and sent as one step.
    async fn start<W: AsyncWrite + Unpin>(
        &self,
        store: &Store,
        output: &mut W,
        rng: &mut ProtocolRng,
        queue: &mut VecDeque<Work>,
    ) -> Result<Option<InFlight>, LinkError> {
        let mut planner = match lock(&self.shared).settled_through {
            Some(through) => Some(store.planner(through)?),
            None => None,
        };
        // Keys for `order`, or the bits left when they do not cover it.
        let mut plan = |order: &Order| match planner.as_mut() {
            Some(p) => p
                .plan(order.count as usize, order.bits)
                .ok_or_else(|| p.remaining_bits()),
            None => Err(0),
        };
        let mut seq = store.last_cut()?.map_or(0, |s| s + 1);
        let mut record = |order: Order, segments: Vec<Vec<Segment>>| {
            let record = CutRecord {
                seq,
                master: order.master,
                slave: order.slave,
                keys: segments
                    .into_iter()
                    .map(|segments| KeyCut {
                        key_id: key_id(rng),
                        segments,
                    })
                    .collect(),
            };
            seq += 1;
            record
        };
        if matches!(queue.front(), Some(Work::Peer { .. }))
            && let Some(Work::Peer { request, order }) = queue.pop_front()
        {
            let answer = match plan(&order) {
                Ok(segments) => {
                    let record = record(order, segments);
                    apply_or_disagree(store, &record, Fate::Reserve)?;
                    Message::CutMade { request, record }
                }
                Err(available_bits) => Message::CutRefused {
                    request,
                    available_bits,
                },
            };
            write(output, &answer).await?;
            return Ok(None);
        }
        let mut cuts = Vec::new();
        while cuts.len() < BATCH
            && let Some(Work::Own(..)) = queue.front()
        {
            let Some(Work::Own(order, reply)) = queue.pop_front() else {
                break;
            };
            // An SAE that has gone away wants nothing cut.
            if reply.is_closed() {
                continue;
            }
            match plan(&order) {
                Ok(segments) => cuts.push((record(order, segments), reply)),
                Err(available_bits) => {
                    let _ = reply.send(Err(OrderFailure::NotEnough { available_bits }));
                }
            }
        }
        if cuts.is_empty() {
            return Ok(None);
        }
        let records = cuts.iter().map(|(record, _)| record.clone()).collect();
        write(output, &Message::Reserve(records)).await?;
        Ok(Some(InFlight {
            cuts,
            deadline: tokio::time::Instant::now() + APPLY_TIMEOUT,
        }))
    }

    async fn follow<W: AsyncWrite + Unpin>(
        &mut self,
        store: &Store,
        output: &mut W,
        received: &mut mpsc::Receiver<Result<Message, LinkError>>,
    ) -> Result<(), LinkError> {
        let mut pending: HashMap<u64, Reply> = HashMap::new();
        let mut next_request = 0u64;
        let mut reported = store.settled_through()?;
        let mut tick = tokio::time::interval(SETTLED_EVERY);
        loop {
            tokio::select! {
                frame = received.recv() => {
                    let Some(frame) = frame else { return Ok(()) };
                    match frame? {
                        Message::Reserve(records) => {
                            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                                return Err(LinkError::Protocol("an empty Reserve"));
                            };
                            let (first, last) = (first.seq, last.seq);
                            let cuts: Vec<_> = records.iter().map(|r| (r, Fate::Reserve)).collect();
                            let answer = match store.apply_cuts(&cuts)? {
                                Ok(_) => Message::Applied { seq: last },
                                Err(refusal) => Message::Refused { seq: first, reason: refusal.to_string() },
                            };
                            write(output, &answer).await?;
                        }
                        Message::CutMade { request, record } => {
                            let reply = pending.remove(&request).ok_or(LinkError::Protocol("CutMade"))?;
                            finish(store, output, vec![(record, reply)]).await?;
                        }
                        Message::CutRefused { request, available_bits } => {
                            let reply = pending.remove(&request).ok_or(LinkError::Protocol("CutRefused"))?;
                            let _ = reply.send(Err(OrderFailure::NotEnough { available_bits }));
                        }
                        Message::Discard { seq } => store.discard_cut(seq)?,
                        other => return Err(LinkError::Protocol(other.name())),
                    }
                }
                order = self.incoming.recv() => {
                    let Some((order, reply)) = order else { return Ok(()) };
                    write(output, &Message::Cut { request: next_request, order }).await?;
                    pending.insert(next_request, reply);
                    next_request += 1;
                }
                _ = tick.tick() => {
                    let settled = store.settled_through()?;
                    if settled != reported {
                        write(output, &Message::Settled { through: settled }).await?;
                        reported = settled;
                        self.set(|s| s.settled_through = settled);
                    }
                }
            }
        }
    }
}

/// Marks the link down when the session ends, however it ends.
struct Connected(Arc<Mutex<Shared>>);

impl Drop for Connected {
    fn drop(&mut self) {
        lock(&self.0).connected = false;
    }
}

/// Stops a task when dropped (a session dropped mid-way takes its reader with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies cuts the peer has applied, on the masters' side, in one step: each served if its
/// SAE still waits, else discarded on both sides.
async fn finish<W: AsyncWrite + Unpin>(
    store: &Store,
    output: &mut W,
    cuts: Vec<(CutRecord, Reply)>,
) -> Result<(), LinkError> {
    let fates: Vec<Fate> = cuts
        .iter()
        .map(|(_, reply)| {
            if reply.is_closed() {
                Fate::Discard
            } else {
                Fate::Serve
            }
        })
        .collect();
    let applying: Vec<_> = cuts
        .iter()
        .map(|(record, _)| record)
        .zip(fates.iter().copied())
        .collect();
    let served = store
        .apply_cuts(&applying)?
        .map_err(|refusal| LinkError::Disagree(refusal.to_string()))?;
    for (((record, reply), keys), fate) in cuts.into_iter().zip(served).zip(fates) {
        // Gone before or after the step: the keys never left; the peer drops its copies.
        if fate == Fate::Discard || reply.send(Ok(keys)).is_err() {
            write(output, &Message::Discard { seq: record.seq }).await?;
        }
    }
    Ok(())
}

fn apply_or_disagree(
    store: &Store,
    record: &CutRecord,
    fate: Fate,
) -> Result<Vec<ServedKey>, LinkError> {
    store
        .apply_cut(record, fate)?
        .map_err(|refusal| LinkError::Disagree(refusal.to_string()))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_version_4_uuids() {
        let mut rng = ProtocolRng::from_os().unwrap();
        let id = key_id(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, key_id(&mut rng));
    }
}

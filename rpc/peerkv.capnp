# rpc/peerkv.capnp: the wire contract of peerkv. One TCP port serves it:
# a client bootstraps a Gateway and asks it for the capabilities it needs.
# The Gateway is made per connection, so that once peers authenticate it can
# hand each identity only what it may hold (a private keyspace's readers get
# a Kv that sees that keyspace; others never receive a reference to it).
#
# Errors that the caller can act on (bad input, not the right moment) come
# back as an `error` result field with an absl status code and a message, so
# the client library can return them unchanged; a broken connection or a
# malformed message is a Cap'n Proto exception and ends that connection.
@0xfc6a8d161c3843f1;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("peerkv::wire");

struct Error {
  code @0 :UInt8;      # absl::StatusCode
  message @1 :Text;
}

struct Version {
  hlc @0 :UInt64;      # 48 bits of milliseconds, 16 of logical counter
  origin @1 :UInt64;   # replica id of the writer
}

struct Record {
  keyspace @0 :Text;
  key @1 :Data;
  version @2 :Version;
  deleted @3 :Bool;    # a tombstone: value is empty
  value @4 :Data;
  seq @5 :UInt64;      # the sending replica's local seq of this change
  replaces @6 :Version;
                       # the causal mark: the version this write replaced at
                       # its origin (zeros: the key held nothing there);
                       # absent: not known (README "Conflict journal")
  signature @7 :Data;  # the origin device's signature (README "Signed
                       # records"); absent: unsigned. At most 512 bytes.
}

struct Mutation {
  keyspace @0 :Text;
  key @1 :Data;
  union {
    put @2 :Data;      # the new value
    delete @3 :Void;
  }
}

struct Watermark {
  origin @0 :UInt64;   # a replica id
  hlc @1 :UInt64;      # every write of that origin up to here is held
}

struct PeerInfo {
  replicaId @0 :UInt64;
  incarnation @1 :UInt64;
  protocolVersion @2 :UInt32;
  name @3 :Text;
  bootNonce @4 :UInt64;       # random per open of the store: two processes
                              # with one replica id (a copied directory)
                              # differ in it; 0 from older peers
  # What the sender holds of the receiver (a hello's answer always knows
  # who that is): its checkpoint of the receiver's log and its watermark
  # for the receiver's origin. heldOf = 0: not told. A receiver that finds
  # them beyond what it holds was restored from an older copy and forks.
  heldOf @5 :UInt64;
  heldIncarnation @6 :UInt64;
  heldSeq @7 :UInt64;
  heldWatermark @8 :UInt64;
  # The sender's wall clock (uncorrected) in ms since the epoch as it sent
  # this hello or answer; 0: not told. The receiver estimates the sender's
  # clock offset from it (store/clock.h, README "Clock skew").
  physicalTimeMs @9 :Int64;
  heldNonce @10 :UInt64;       # the receiver's open nonce when it served
                              # heldSeq (a life of its log it may have lost)
  retired @11 :List(UInt64);  # replica ids retired by forks that the sender
                              # knows of (at most 256): watermarks for them
                              # are not trusted
}

struct PeerStatus {
  name @0 :Text;
  address @1 :Text;         # empty for a peer that connected to us
  replicaId @2 :UInt64;
  inbound @3 :Bool;
  reachable @4 :Bool;
  lastExchangeMs @5 :Int64; # Unix time of the last successful pull; 0 if never
  checkpointSeq @6 :UInt64;
  behind @7 :UInt64;
  refused @8 :UInt64;
  lastError @9 :Text;
  links @10 :UInt32;        # connections to it now
  suspectLinks @11 :UInt32; # of those, links a request went unanswered on
  deadLinks @12 :UInt64;    # links found dead (keepalive) and closed, since start
  clockKnown @13 :Bool;     # it told its time in hello
  clockOffsetMs @14 :Int64; # its wall clock minus ours, as estimated then
  clockRttMs @15 :Int64;    # the round trip it was measured over; -1: it
                            # dialled us (the offset is short by the one-way delay)
  reconciles @16 :UInt64;   # reconcile sessions with it since start
  lastReconcileMs @17 :Int64;  # Unix time the last one ended; 0 if never
  lastReconcile @18 :Text;  # what it found: "in sync", or what differed
}

struct KeyspaceDiff {
  keyspace @0 :Text;
  fetched @1 :UInt64;       # records newer on the peer, merged here
  peerLacked @2 :UInt64;    # records the peer lacked or held older, pushed
}

struct ReconcileReport {
  peer @0 :Text;
  inSync @1 :Bool;          # equal roots at the end
  wasInSync @2 :Bool;       # equal at the first compare
  rounds @3 :UInt32;
  passes @4 :UInt32;
  bytesSent @5 :UInt64;
  bytesReceived @6 :UInt64;
  timeUs @7 :UInt64;
  wonHere @8 :UInt64;
  refusedHere @9 :UInt64;
  refusedThere @10 :UInt64;
  conflicts @11 :UInt64;    # equal versions, different contents
  incomplete @12 :Text;     # why it stopped early, if it did
  keyspaces @13 :List(KeyspaceDiff);
}

struct ServerStatus {
  replicaId @0 :UInt64;
  incarnation @1 :UInt64;
  liveRecords @2 :UInt64;
  tombstones @3 :UInt64;
  maxSeq @4 :UInt64;
  uptimeMs @5 :UInt64;
  connectedClients @6 :UInt32;
  replicaName @7 :Text;
  diskBytes @8 :UInt64;
  dataDir @9 :Text;
  maxValueBytes @10 :UInt64;
  peers @11 :List(PeerStatus);
  fingerprint @12 :UInt64;  # equal on replicas holding the same registers
  peersOmitted @13 :UInt32; # peers not listed: the answer stays within the
                            # reply budget, whatever peers tell us
  retiredIds @14 :List(UInt64);
                            # replica ids this data directory had before it
                            # forked (restored from an older copy), oldest
                            # first; never used again
  quarantineRecords @15 :UInt64;
                            # records held aside: their clock is more than
                            # max_clock_skew ahead; merged once local time
                            # allows
  quarantineOrigins @16 :UInt64;
  quarantined @17 :List(QuarantinedOrigin);
                            # per origin, at most 32, those due first
  quarantineDropped @18 :UInt64;
                            # dropped since start: quarantine full, or an
                            # entry on disk that did not decode
  clockPeers @19 :UInt32;   # peers the clock estimate rests on; 0: none
  clockOffsetMs @20 :Int64; # this replica's wall clock minus estimated real time
  clockCorrectionMs @21 :Int64;
                            # added to the wall clock to stamp writes (<= 0)
  clonesRefused @22 :UInt64;
                            # links refused since start: a second process
                            # claimed this replica's id or a peer's (a
                            # cloned data directory)
  # Tombstone collection (README "Tombstone collection").
  tombstonesCollected @23 :UInt64;   # dropped since start
  tombstonesHeld @24 :UInt64;        # old enough, kept: a peer has not acknowledged them
  tombstonesHeldBy @25 :UInt64;      # the peer holding most of them back (0: none)
  tombstonesHeldByCount @26 :UInt64;
  acknowledgedPeers @27 :UInt64;     # peers collection waits for
  forgottenPeers @28 :UInt64;        # released with `peer forget`
  staleRefused @29 :UInt64;          # records refused since start: their tombstone was collected
  conflictEntries @30 :UInt64;
                            # the conflict journal: entries held, all keyspaces
  conflictBytes @31 :UInt64;
  conflictsDropped @32 :UInt64;
                            # entries dropped over the bounds since start
  conflictKeyspaces @33 :List(ConflictKeyspace);
                            # per keyspace, at most 32, most entries first
  gateRefused @34 :UInt64;  # records the merge gate refused since start
                            # (README "Signed records")
}

struct ConflictKeyspace {
  keyspace @0 :Text;
  entries @1 :UInt64;
  bytes @2 :UInt64;
  dropped @3 :UInt64;
}

struct ConflictEntry {
  # A value that lost to a concurrent write (README "Conflict journal").
  key @0 :Data;
  loser @1 :Version;
  loserDeleted @2 :Bool;    # the loser was a delete
  loserValue @3 :Data;
  winner @4 :Version;       # the version that beat it
  whenMs @5 :Int64;         # Unix time this replica journaled it
}

struct QuarantinedOrigin {
  origin @0 :UInt64;
  records @1 :UInt64;
  firstDueMs @2 :Int64;     # Unix time the first and last become mergeable
  lastDueMs @3 :Int64;
}

interface Gateway {
  # The bootstrap capability of a connection.
  kv @0 () -> (kv :Kv);
  replica @1 () -> (replica :Replica);
}

interface Replica {
  # Anti-entropy between replicas. After hello, either side may pull from
  # the other over the same connection: `back` is the caller's Replica, so
  # a replica that can only dial out (a phone) still receives pulls.

  hello @0 (info :PeerInfo, back :Replica) -> (error :Error, info :PeerInfo);

  pull @1 (requester :UInt64, incarnation :UInt64, afterSeq :UInt64,
           maxRecords :UInt32, maxBytes :UInt32, maxValueBytes :UInt64,
           watermarks :List(Watermark), afterNonce :UInt64, mergedSeq :UInt64,
           physicalTimeMs :Int64)
      -> (error :Error, replicaId :UInt64, incarnation :UInt64, fromSeq :UInt64,
          batch :Data, lastSeq :UInt64, maxSeq :UInt64,
          watermarks :List(Watermark), storeSum :Data, storeCount :UInt64, nonce :UInt64);
  # afterNonce: the server's open nonce when it served afterSeq (0: not
  # known); nonce: the server's open nonce now, kept with the checkpoint.
  # A nonce the server's directory never drew shows it was restored.
  # mergedSeq: the requester's checkpoint (of afterSeq's incarnation) whose
  # pages it has merged; a pipelined request's afterSeq is a page ahead of
  # it (0: none, or not told). A friend's device is waited for by tombstone
  # collection up to it.
  # physicalTimeMs: the requester's estimate of real time when it asked
  # (0: not told); with its watermarks, its acknowledgement for tombstone
  # collection (README "Tombstone collection").
  # Changes after the requester's checkpoint (afterSeq of incarnation),
  # minus what came from or was written by the requester, what its
  # watermarks cover, and values over its limit. A checkpoint of another
  # incarnation starts at fromSeq = 0. The records travel in `batch`, in
  # the compact form of replication/batch_codec.h. The answer's watermarks
  # are the server's, read before its log. Watermarks in both directions
  # are deltas: only the entries that grew since the previous message on
  # this connection in that direction (all of them the first time).
  # An answer that reaches maxSeq also carries the server's whole-store
  # fingerprint (the sum of its keyspaces' root fingerprints: 32 bytes and
  # a count; empty: not told), so the puller can see that the two differ
  # although the log says nothing is behind, and reconcile.

  nudge @2 (watermarks :List(Watermark)) -> ();
  # "I have changes for you": the callee pulls from the caller soon, unless
  # its own watermarks cover the caller's (a delta, like pull's).

  ping @3 () -> ();
  # Keepalive: each side pings every link every --keepalive-ms; a link with
  # a ping unanswered for 5 intervals is half-open and is closed. Any
  # answer counts, an error too (a server without ping answers
  # "unimplemented").

  reconcile @4 (request :Data) -> (error :Error, response :Data);
  # One round of range-based set reconciliation, in a session the caller
  # drives (replication/reconcile.h): both messages are that file's compact
  # codec, so that a child fingerprint costs its two bytes. Pushed records
  # are merged (Store::Merge) before the answer is computed. A request out
  # of bounds is refused with InvalidArgument naming the field and the
  # limit, and the link is closed.

  snapshot @5 (requester :UInt64, incarnation :UInt64, pointSeq :UInt64,
               afterKeyspace :Text, afterKey :Data, maxRecords :UInt32,
               maxBytes :UInt32, maxValueBytes :UInt64)
      -> (error :Error, replicaId :UInt64, incarnation :UInt64, nonce :UInt64,
          pointSeq :UInt64, watermarks :List(Watermark), batch :Data, count :UInt64,
          done :Bool);
  # One page of a snapshot bootstrap (README "Snapshot bootstrap"): the
  # callee's registers after (afterKeyspace, afterKey) in key order, in
  # pull's batch codec, at most maxRecords and about maxBytes (lowered to
  # what the callee serves). incarnation 0 begins a snapshot: the answer
  # pins its point (incarnation, pointSeq) and carries the callee's whole
  # watermarks (only then). A later page names that point; a callee of
  # another incarnation refuses with FailedPrecondition.
}

interface Kv {
  get @0 (keyspace :Text, key :Data) -> (error :Error, found :Bool, record :Record);
  # found is false when the key was never written; a tombstone is found
  # with deleted = true.

  put @1 (keyspace :Text, key :Data, value :Data) -> (error :Error, version :Version);
  delete @2 (keyspace :Text, key :Data) -> (error :Error, version :Version);
  # Both return once the write is durable.

  scan @3 (keyspace :Text, prefix :Data, startAfter :Data, limit :UInt32,
           includeTombstones :Bool) -> (error :Error, records :List(Record), more :Bool);
  # One page in key order; continue with startAfter = the last key.

  writeBatch @4 (mutations :List(Mutation)) -> (error :Error, versions :List(Version));
  # All mutations applied atomically, in order, durable on return.

  watch @5 (keyspace :Text, prefix :Data, fromSeq :UInt64, watcher :Watcher)
      -> (error :Error, handle :WatchHandle, maxSeq :UInt64);
  # Calls watcher.changes with the records of `keyspace` (keys starting with
  # `prefix`) changed after `fromSeq`, in commit order, until the handle is
  # dropped. At most a few calls are outstanding at a time: a slow watcher
  # falls behind (and then sees the latest value of each key it missed)
  # instead of making the server buffer.

  status @6 () -> (error :Error, status :ServerStatus);

  getMany @7 (gets :List(KeyRef)) -> (error :Error, results :List(GetResult));
  putMany @8 (mutations :List(Mutation)) -> (error :Error, results :List(WriteResult));
  # Many independent gets or writes in one call: what a client that
  # pipelines sends in one message, as a Redis client pipelines commands.
  # Unlike writeBatch, each write succeeds or fails on its own (the valid
  # ones still share one durable commit). A call with more items than fit
  # in one answer is refused as a whole (error); a getMany whose values
  # would overflow its answer refuses the rest of its gets, which can be
  # asked again.

  reconcile @9 (peer :Text) -> (error :Error, report :ReconcileReport);
  # Reconciles this replica with `peer` (a name, address or replica id as
  # status shows them) now and answers what differed. NotFound for an
  # unknown peer; FailedPrecondition on a server that does not replicate.

  # Strong keyspaces (README "Strong keyspaces"). put, delete and get on a
  # strong keyspace go through the consensus service too (unconditional
  # write; linearizable read); writeBatch and putMany refuse strong
  # keyspaces, getMany serves local copies.

  writeIf @10 (mutation :Mutation, condition :Condition) -> (error :Error, version :Version);
  # A put or delete that commits only if `condition` holds (strong keyspaces
  # only). FailedPrecondition naming the current version if it does not;
  # Unavailable naming the service if it cannot be reached within 2 s.

  getStrong @11 (keyspace :Text, key :Data, staleOk :Bool)
      -> (error :Error, found :Bool, record :Record, stale :Bool, stalenessMs :Int64);
  # get with a choice: staleOk serves the local copy of a strong keyspace
  # (stale = true) and says how old it may be (stalenessMs: time since this
  # replica last had every committed write applied; -1: never).

  setMode @12 (keyspace :Text, mode :Text) -> (error :Error, since :Version);
  # mode "strong" or "lww": switches the keyspace through the consensus
  # service; since is the switch's version (the barrier).

  listModes @13 () -> (error :Error, keyspaces :List(KeyspaceMode));
  # Every keyspace this replica holds or knows a mode of, with its mode.

  # The conflict journal (README "Conflict journal").
  listConflicts @14 (keyspace :Text, key :Data, byKey :Bool)
      -> (error :Error, entries :List(ConflictEntry), more :Bool);
  # The keyspace's entries (only those of `key` when byKey), oldest first;
  # more: some were left out to keep the answer within its limits.
  restoreConflict @15 (keyspace :Text, key :Data, version :Version)
      -> (error :Error, version :Version);
  # Writes the journaled loser `version` back as a new write and removes
  # the entry; answers the new version. NotFound if it is not in the journal.
  clearConflicts @16 (keyspace :Text) -> (error :Error, cleared :UInt64);

  forgetPeer @17 (peer :Text) -> (error :Error, replicaId :UInt64);
  # Stops waiting for `peer` (a name, address or replica id as status shows
  # them) before collecting tombstones: the tombstones it held back may be
  # collected, and what it sends later that is older than what it was
  # forgotten with is refused (README "Tombstone collection"). NotFound for
  # a peer this replica does not wait for.

  # Groups and policies (README "Groups and policies"): signed by the
  # server's user key, so only a server on a device holding it may change
  # them (FailedPrecondition otherwise). WHO and members in their text form.
  setPolicy @18 (keyspace :Text, readers :List(Text), writers :List(Text)) -> (error :Error);
  getPolicy @19 (keyspace :Text) -> (error :Error, policy :PolicyInfo);
  # NotFound if the keyspace has no policy.
  groupChange @20 (op :Text, name :Text, members :List(Text)) -> (error :Error);
  # op: "create" (no members), "add" (1..n members), "remove" (one member).
  listGroups @21 (name :Text) -> (error :Error, groups :List(GroupInfo));
  # The server's user's groups; only `name` if not empty.

  compact @22 (keyspace :Text)
      -> (error :Error, tombstonesCollected :UInt64, logEntriesCompacted :UInt64,
          entriesCopied :UInt64, pagesBefore :UInt64, pagesAfter :UInt64);
  # `peerkv compact`: a tombstone collection pass now over `keyspace`'s
  # registers (empty: every keyspace), then a repack of the tables; what
  # they did, and the LMDB pages in use before and after (README "Tombstone
  # collection"). Local user only.
}

struct PolicyInfo {
  owner @0 :Text;        # user id
  readers @1 :List(Text);
  writers @2 :List(Text);
  timeMs @3 :Int64;
  modes @4 :Text;        # the mode switches, "strong@V1;lww@V2" (auth::FormatPolicyModes); "" none
}

struct GroupInfo {
  name @0 :Text;
  members @1 :List(Text);  # user ids and group:NAME
  timeMs @2 :Int64;
}

struct Condition {
  kind @0 :UInt8;        # 0 none, 1 if absent (or deleted), 2 if version
  version @1 :Version;   # for kind 2
}

struct KeyspaceMode {
  keyspace @0 :Text;
  strong @1 :Bool;
  since @2 :Version;     # the last switch's version; 0 if never switched
  switches @3 :UInt32;
  registers @4 :UInt64;  # registers held here, deleted keys included
}

struct KeyRef {
  keyspace @0 :Text;
  key @1 :Data;
}

struct GetResult {
  error @0 :Error;
  found @1 :Bool;
  record @2 :Record;
}

struct WriteResult {
  error @0 :Error;
  version @1 :Version;
}

interface Watcher {
  changes @0 (records :List(Record), lastSeq :UInt64) -> ();
  # lastSeq: pass it as fromSeq to resume after these records.

  failed @1 (error :Error) -> ();
  # The server cannot go on (it could not read its log); the watch is over.
}

interface WatchHandle {
  # Dropping the last reference cancels the watch.
}

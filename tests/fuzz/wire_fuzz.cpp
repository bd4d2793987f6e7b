// The message kinds of decode_fuzz.cpp that worker processes send beyond
// plain values: weft::array (inline bytes, shared-store and spill
// references), object_refs and actor_handles read through a ref bundle,
// error payloads, wire records, and the framing of a lane's ring. Each
// decodes hostile bytes with weft's own code and no process: a node's
// store (a fresh arena per input, a spill directory) and the ref table a
// driver would build are set up here. After each input, what the decoded
// values held is given back and the store must be sound and empty again.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "decode_fuzz.hpp"
#include "src/lane.hpp"
#include "src/node_store.hpp"
#include "src/ref_codec.hpp"
#include "src/shm_arena.hpp"
#include "src/spill_store.hpp"
#include "src/worker_protocol.hpp"
#include <weft/weft.hpp>

namespace wire_fuzz {

using namespace weft::detail;

/// WEFT_FUZZ_VERBOSE=1: says why an input was refused (to check seeds).
void refused(const std::string& why) {
  static const bool verbose = std::getenv("WEFT_FUZZ_VERBOSE") != nullptr;
  if (verbose)
    std::fprintf(stderr, "  refused: %s\n", why.c_str());
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "wire_fuzz: %s\n", what.c_str());
  std::abort();
}

/// An actor class, only to name actor_handle<fuzz_actor>.
struct fuzz_actor {
  int value = 0;
};

// ---- the node's store, as a driver has it ----

/// Arrays of at least this many bytes go to the store.
constexpr std::size_t threshold = 256;
/// Inputs name the spill file of the fixture by this reference; the
/// harness puts the file's real (random) one in its place.
constexpr std::uint64_t spill_placeholder = 0x8000'5350'494c'4c00ULL;

/// A fresh store for one input, holding the references a sender would:
/// two arrays in the arena, one spilled to a file, and the offset of a
/// block already freed.
struct store_fixture {
  std::unique_ptr<shm_arena> arena;
  weft::array<double> in_store;        ///< 64 doubles
  weft::array<std::uint8_t> in_store8; ///< 300 bytes
  weft::array<double> spilled;         ///< 512 doubles, in a spill file
  std::uint64_t spill_ref = 0;
};

/// The spill directory (weft-spill-<pid>-<random> in the temporary
/// directory, made at the first spill and removed at exit).
spill_store& spill() {
  static const auto store = spill_store::create(std::filesystem::temp_directory_path().string());
  return *store;
}

template <class T>
weft::array<T> filled(std::size_t n, T first) {
  return weft::array<T>::build(n, [first](std::span<T> out) {
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = static_cast<T>(first + static_cast<T>(i));
  });
}

std::uint64_t store_offset(const shm_arena& arena, const void* data) {
  return static_cast<std::uint64_t>(static_cast<const std::byte*>(data) - arena.data(0));
}

/// The reference of the one spill file there is (named by its hex digits).
std::uint64_t only_spill_file() {
  for (const auto& e : std::filesystem::directory_iterator(spill().directory()))
    return std::stoull(e.path().filename().string(), nullptr, 16);
  fail("the fixture's spilled array has no file");
}

std::unique_ptr<store_fixture> make_store() {
  auto f = std::make_unique<store_fixture>();
  f->arena = shm_arena::create(1 << 20);
  set_node_store(f->arena.get(), threshold, &spill());
  // Spilled: made while the arena is full.
  const std::uint64_t filler = f->arena->allocate(f->arena->max_allocation());
  if (filler == 0)
    fail("cannot fill the fixture's arena");
  f->spilled = filled<double>(512, 0.5);
  f->arena->release(filler);
  if (!f->spilled.spilled())
    fail("the fixture's array did not spill");
  f->spill_ref = only_spill_file();
  f->in_store = filled<double>(64, 1.0);
  f->in_store8 = filled<std::uint8_t>(300, 7);
  auto freed = filled<double>(40, 2.0); // (its block is freed at once)
  if (!f->in_store.in_shared_memory() || !f->in_store8.in_shared_memory() || !freed.in_shared_memory())
    fail("the fixture's arrays are not in the store");
  return f;
}

/// Gives back the fixture's references; the store must then be empty and
/// sound, and no spill file left.
void check_store_released(std::unique_ptr<store_fixture>& f) {
  f->in_store = {};
  f->in_store8 = {};
  f->spilled = {};
  if (const auto problem = f->arena->audit(); !problem.empty())
    fail("the store is corrupt after a decode: " + problem);
  if (f->arena->blocks_in_use() != 0)
    fail(std::to_string(f->arena->blocks_in_use()) + " store blocks are left after a decode (a leaked reference)");
  if (spill().files() != 0)
    fail(std::to_string(spill().files()) + " spill files are left after a decode (a leaked reference)");
  set_node_store(nullptr, threshold, &spill());
  // The arena stays in array.cpp's hands until the next input's replaces it.
}

/// One store per input; the previous one is unmapped only once the next
/// is installed (array.cpp keeps a pointer to the last arena it was given).
struct store_scope {
  static std::unique_ptr<store_fixture>& last() {
    static std::unique_ptr<store_fixture> f;
    return f;
  }
  std::unique_ptr<store_fixture> f = make_store();
  store_scope() { last().reset(); }
  ~store_scope() {
    check_store_released(f);
    last() = std::move(f);
  }
};

/// The input with the spill placeholder replaced by the fixture's file.
std::string relocated(std::span<const std::byte> bytes, const store_fixture& f) {
  std::string s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  for (std::size_t i = 0; i + 8 <= s.size(); ++i) {
    std::uint64_t v = 0;
    std::memcpy(&v, s.data() + i, 8);
    if (v == spill_placeholder)
      std::memcpy(s.data() + i, &f.spill_ref, 8);
  }
  return s;
}

/// A decoded array's elements lie in this process's memory: inside the
/// store for a store array, and every byte readable.
template <class T>
void check_array(const weft::array<T>& a, const store_fixture& f) {
  const std::size_t bytes = a.size() * sizeof(T);
  if (a.in_shared_memory() && !a.spilled()) {
    const auto* p = reinterpret_cast<const std::byte*>(a.data());
    const std::byte* base = f.arena->data(0);
    if (p < base || static_cast<std::size_t>(p - base) > f.arena->capacity() ||
        bytes > f.arena->capacity() - static_cast<std::size_t>(p - base))
      fail("a decoded array of " + std::to_string(bytes) + " bytes at store offset " + std::to_string(p - base) +
           " reaches outside the store");
  }
  volatile unsigned char sum = 0;
  const auto* b = reinterpret_cast<const unsigned char*>(a.data());
  for (std::size_t i = 0; i < bytes; ++i)
    sum = static_cast<unsigned char>(sum + b[i]);
  if (a.shape().empty())
    fail("a decoded array has no shape");
}

using array_msg = std::tuple<weft::array<double>, std::vector<weft::array<std::uint8_t>>, weft::array<std::int32_t>>;

void check(const array_msg& m, const store_fixture& f) {
  check_array(std::get<0>(m), f);
  for (const auto& a : std::get<1>(m))
    check_array(a, f);
  check_array(std::get<2>(m), f);
}

void decode_arrays(std::span<const std::byte> bytes) {
  store_scope store;
  const std::string in = relocated(bytes, *store.f);
  try {
    auto m = weft::from_bytes<array_msg>(std::span(reinterpret_cast<const std::byte*>(in.data()), in.size()));
    check(m, *store.f);
    (void)weft::to_bytes(m);
  } catch (const weft::serialization_error& e) {
    refused(e.what());
  }
}

// ---- refs and handles, through a ref bundle ----

using ref_msg = std::tuple<weft::object_ref<int>, std::vector<weft::object_ref<weft::array<double>>>,
                           weft::actor_handle<fuzz_actor>, weft::array<double>>;

/// The types an exported value of the bundle may have (a bundle entry
/// names its type by a code ref; here its offset picks one of these).
constexpr std::array<ref_ops_fn, 5> exported_types{&ref_ops<int>, &ref_ops<weft::array<double>>, &ref_ops<std::string>,
                                                   &handle_ops<fuzz_actor>,
                                                   &ref_ops<std::vector<weft::object_ref<int>>>};

template <class T>
carried_ref ready_cell(std::uint64_t id, T value, ref_ops_fn ops = &ref_ops<T>) {
  auto* c = new value_object<T>();
  object_ptr cell(c);
  c->emplace(std::move(value));
  c->complete_value();
  cell->assign_id(weft::object_id{id});
  return {std::move(cell), ops};
}

/// The objects the node lent this worker (held entries may name them):
/// ids 2, 4, 6 and 8.
ref_table lent_objects(const store_fixture& f) {
  ref_table lent;
  lent.refs[2] = ready_cell<int>(2, 42);
  lent.refs[4] = ready_cell<weft::array<double>>(4, f.in_store);
  lent.refs[6] = ready_cell<actor_ref>(6, actor_ref(), &handle_ops<fuzz_actor>);
  auto pending = carried_ref{object_ptr(new value_object<int>()), &ref_ops<int>};
  pending.cell->assign_id(weft::object_id{8});
  lent.refs[8] = std::move(pending);
  return lent;
}

/// What a driver does with a worker's ref bundle: held ids must be lent,
/// exported values and errors become cells of their own. False on a
/// refusal.
bool read_bundle(std::string_view bundle, const ref_table& lent, ref_table& out) {
  wire::reader r(bundle);
  wire::bundle_entry e;
  while (e.read(r)) {
    if (e.k == wire::bundle_entry::kind::held) {
      auto it = lent.refs.find(e.id);
      if (it == lent.refs.end())
        return false;
      out.refs[e.id] = it->second;
      continue;
    }
    const ref_ops_fn ops = exported_types[e.ops.offset % exported_types.size()];
    object_ptr cell;
    try {
      if (e.k == wire::bundle_entry::kind::value) {
        ref_codec_scope scope(&out); // refs inside it come before it
        cell = object_ptr(ops(ref_op::make_ready, nullptr, e.payload, nullptr));
      } else {
        cell = object_ptr(ops(ref_op::make_pending, nullptr, {}, nullptr));
        cell->complete_error(rebuild_error(static_cast<error_kind>(e.err), e.payload));
      }
    } catch (const weft::serialization_error& x) {
      refused(std::string("an exported value: ") + x.what());
      cell = object_ptr(ops(ref_op::make_pending, nullptr, {}, nullptr));
      cell->complete_error(std::current_exception());
    }
    cell->assign_id(weft::object_id{e.id});
    out.refs[e.id] = carried_ref{std::move(cell), ops};
  }
  return r.ok();
}

/// Input: a record of two byte strings, the ref bundle and the encoded
/// message.
void decode_refs(std::span<const std::byte> bytes) {
  store_scope store;
  const std::string in = relocated(bytes, *store.f);
  wire::reader r(in);
  const auto bundle = r.get_bytes();
  const auto message = r.get_bytes();
  if (!r.ok())
    return refused("not a record of two byte strings");
  {
    const ref_table lent = lent_objects(*store.f);
    ref_table table;
    if (!read_bundle(bundle, lent, table))
      return refused("the ref bundle");
    try {
      ref_codec_scope scope(&table);
      auto m = weft::from_bytes<ref_msg>(std::span(reinterpret_cast<const std::byte*>(message.data()), message.size()));
      check_array(std::get<3>(m), *store.f);
      for (const auto& ref : std::get<1>(m))
        if (ref.valid() && ref.cell()->done() && !ref.cell()->failed())
          check_array(static_cast<value_object<weft::array<double>>*>(ref.cell())->value(), *store.f);
      ref_collector again;
      ref_codec_scope encoding(&again);
      (void)weft::to_bytes(m);
    } catch (const weft::serialization_error& e) {
      refused(e.what());
    }
  }
}

// ---- error payloads ----

/// Input: the error kind, then the payload.
void decode_error(std::span<const std::byte> bytes) {
  if (bytes.empty())
    return;
  const auto kind = static_cast<error_kind>(static_cast<std::uint8_t>(bytes[0]));
  const std::string_view payload(reinterpret_cast<const char*>(bytes.data()) + 1, bytes.size() - 1);
  const std::exception_ptr e = rebuild_error(kind, payload);
  if (!e)
    fail("rebuild_error returned no error");
  try {
    std::rethrow_exception(e);
  } catch (const weft::error&) {
  }
}

// ---- wire records ----

/// A record that reads must write back to what reads the same.
template <class Record>
void round_trip(const Record& rec) {
  std::string once, twice;
  rec.write(once);
  Record again;
  if (!again.read(once))
    fail("a record that was read does not read again once written");
  again.write(twice);
  if (once != twice)
    fail("a record written, read and written again changed");
}

void read_code_refs(std::string_view packed) {
  for (wire::reader r(packed); r.ok() && !r.at_end();) {
    code_ref c;
    wire::get_code_ref(r, c);
  }
}

template <class Record>
void read_record(std::string_view rec) {
  Record r;
  if (!r.read(rec))
    return refused("a record");
  round_trip(r);
  if constexpr (requires { r.matchers; })
    read_code_refs(r.matchers);
  if constexpr (requires { r.refs; })
    for_each_packed_id(r.refs, [](std::uint64_t) {});
}

void read_bundle_entries(std::string_view bundle) {
  wire::reader r(bundle);
  wire::bundle_entry e;
  while (e.read(r)) {
    std::string once;
    e.write(once);
    wire::reader again_r(once);
    wire::bundle_entry again;
    if (!again.read(again_r) || !again_r.at_end())
      fail("a bundle entry that was read does not read again once written");
  }
}

/// Input: a batch of (u8 record type, length-prefixed record) pairs.
void decode_records(std::span<const std::byte> bytes) {
  wire::reader batch(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  while (batch.ok() && !batch.at_end()) {
    const auto type = batch.get<std::uint8_t>();
    const auto rec = batch.get_bytes();
    if (!batch.ok())
      break;
    switch (type % 7) {
    case 0:
      read_record<wire::call_record>(rec);
      break;
    case 1:
      read_record<wire::done_record>(rec);
      break;
    case 2:
      read_record<wire::actor_create_record>(rec);
      break;
    case 3:
      read_record<wire::actor_call_record>(rec);
      break;
    case 4:
      read_record<wire::submit_record>(rec);
      break;
    case 5:
      read_record<wire::actor_make_record>(rec);
      break;
    default:
      read_bundle_entries(rec);
      break;
    }
  }
}

// ---- a lane's ring, written by a hostile worker ----

/// The node's doorbell, made once.
doorbell* bell() {
  static doorbell_map m = doorbell_map::create();
  return m.get();
}

/// The shared words of the ring to the driver, as lane.cpp lays them out
/// (the second ring of the header page): head at byte 128, tail at 192.
struct ring_view {
  std::byte* base;
  std::atomic_ref<std::uint64_t> head() { return std::atomic_ref<std::uint64_t>(word(128)); }
  std::atomic_ref<std::uint64_t> tail() { return std::atomic_ref<std::uint64_t>(word(192)); }
  std::byte* data() { return base + lane::to_driver_offset; }
  std::uint64_t& word(std::size_t at) { return *reinterpret_cast<std::uint64_t*>(base + at); }
};

/// Input: steps, each an op byte and its operands: (0) u16 n and n bytes
/// written at the head, which moves past them; (1) u32: the head moves
/// that far without writing; (2) u64: the tail is overwritten; (3) the
/// driver reads what it can. The driver reads at the end too.
void drive_lane(std::span<const std::byte> bytes) {
  const auto l = lane::create(bell());
  void* m = ::mmap(nullptr, lane::file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd(), 0);
  if (m == MAP_FAILED)
    fail("cannot map the lane");
  ring_view ring{static_cast<std::byte*>(m)};
  wire::reader in(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  lane_kind k{};
  std::string body;
  auto drain = [&] {
    for (int i = 0; i < 64 && l->take_from_worker(k, body); ++i) {
      const auto kind = static_cast<std::uint8_t>(k);
      if (kind < static_cast<std::uint8_t>(lane_kind::done) || kind > static_cast<std::uint8_t>(lane_kind::taken))
        fail("the driver read a message of kind " + std::to_string(kind) + " from a worker");
    }
  };
  for (int step = 0; step < 64 && in.ok() && !in.at_end(); ++step) {
    switch (in.get<std::uint8_t>() % 4) {
    case 0: {
      const auto n = in.get<std::uint16_t>();
      const auto head = ring.head().load();
      for (std::size_t i = 0; i < n && in.ok() && !in.at_end(); ++i)
        ring.data()[(head + i) % lane::ring_bytes] = static_cast<std::byte>(in.get<std::uint8_t>());
      ring.head().store(head + n);
      break;
    }
    case 1:
      ring.head().store(ring.head().load() + in.get<std::uint32_t>());
      break;
    case 2:
      ring.tail().store(in.get<std::uint64_t>());
      break;
    default:
      drain();
      break;
    }
  }
  drain();
  if (l->corrupt())
    refused("the ring is corrupt");
  ::munmap(m, lane::file_bytes);
}

// ---- seeds ----

void add(std::vector<std::pair<std::string, std::vector<std::byte>>>& out, const std::string& name,
         unsigned char selector, std::string_view body) {
  std::vector<std::byte> bytes{std::byte{selector}};
  for (char c : body)
    bytes.push_back(static_cast<std::byte>(c));
  out.emplace_back(name, std::move(bytes));
}

std::string str(const std::vector<std::byte>& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

/// The encoding with the fixture's spill reference replaced by the
/// placeholder inputs use.
std::string placeheld(std::string s, const store_fixture& f) {
  for (std::size_t i = 0; i + 8 <= s.size(); ++i)
    if (std::memcmp(s.data() + i, &f.spill_ref, 8) == 0)
      std::memcpy(s.data() + i, &spill_placeholder, 8);
  return s;
}

std::string record(std::string_view a, std::string_view b) {
  std::string out;
  wire::writer w(out);
  w.put_bytes(a);
  w.put_bytes(b);
  return out;
}

void add_seeds(std::vector<std::pair<std::string, std::vector<std::byte>>>& out) {
  const unsigned char arrays = '6', refs = '7', errors = '8', records = '9', lanes = ':';
  {
    store_scope store;
    const auto& f = *store.f;
    {
      // Inline bytes, a shape, and arrays in the store by reference.
      array_msg m{weft::array<double>({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, {2, 3}),
                  {f.in_store8, weft::array<std::uint8_t>({9, 8, 7})},
                  weft::array<std::int32_t>({-1, 0, 1})};
      add(out, "seed-array-store-reference", arrays, str(weft::to_bytes(m)));
    }
    {
      // An array the receiver adopts (the reference encoding added is
      // dropped here: no one decodes this one).
      weft::detail::hand_over_references handing;
      array_msg m{f.in_store, {}, {}};
      add(out, "seed-array-adopted", arrays, str(weft::to_bytes(m)));
      f.arena->release(store_offset(*f.arena, f.in_store.data()));
    }
    {
      // One spilled to a file.
      array_msg m{f.spilled, {f.in_store8}, {}};
      add(out, "seed-array-spilled", arrays, placeheld(str(weft::to_bytes(m)), f));
    }
    {
      // Big enough inline to go to the store when decoded.
      const auto inline_bytes = [&] {
        set_node_store(nullptr, threshold, &spill()); // (encoded as bytes)
        auto a = filled<std::int32_t>(100, 5);
        set_node_store(f.arena.get(), threshold, &spill());
        return str(weft::to_bytes(array_msg{{}, {}, a}));
      }();
      add(out, "seed-array-inline-to-store", arrays, inline_bytes);
    }
    {
      // The bundle exports an int, an array (by reference) and a failed
      // object, and names an object the node lent; the message refers to
      // them and to the lent handle holder.
      std::string bundle;
      auto put_value = [&](std::uint64_t id, std::uint64_t type, std::string payload) {
        wire::bundle_entry e;
        e.k = wire::bundle_entry::kind::value;
        e.id = id;
        e.ops.offset = type;
        e.payload = payload;
        e.write(bundle);
      };
      put_value(101, 0, str(weft::to_bytes(7)));
      put_value(103, 1, placeheld(str(weft::to_bytes(f.spilled)), f));
      for (std::uint64_t lent : {4, 6}) {
        wire::bundle_entry e;
        e.k = wire::bundle_entry::kind::held;
        e.id = lent;
        e.write(bundle);
      }
      {
        std::string payload;
        const auto kind = encode_error(std::make_exception_ptr(weft::error("boom")), payload);
        wire::bundle_entry e;
        e.k = wire::bundle_entry::kind::error;
        e.id = 105;
        e.ops.offset = 1;
        e.err = static_cast<std::uint8_t>(kind);
        e.payload = payload;
        e.write(bundle);
      }
      // The message names them by id: the int 101, the refs 103, 4 and
      // 105, the lent handle holder 6, and an array inline.
      std::string message;
      {
        const std::uint64_t ids[] = {101, 103, 4, 105, 6};
        // Encoded with a codec that numbers refs as given above.
        struct numbering final : ref_codec {
          const std::uint64_t* next;
          std::uint64_t encode(object_state*, ref_ops_fn) override { return *next++; }
          object_ptr decode(std::uint64_t, ref_ops_fn) override { return {}; }
        } codec;
        codec.next = ids;
        auto some = ready_cell<int>(1, 0).cell;
        auto some_array = ready_cell<weft::array<double>>(1, weft::array<double>()).cell;
        ref_msg m{weft::object_ref<int>(some),
                  {weft::object_ref<weft::array<double>>(some_array), weft::object_ref<weft::array<double>>(some_array),
                   weft::object_ref<weft::array<double>>(some_array)},
                  weft::actor_handle<fuzz_actor>(some, weft::actor_id{77}),
                  weft::array<double>({0.5, 1.5})};
        ref_codec_scope scope(&codec);
        message = str(weft::to_bytes(m));
      }
      add(out, "seed-refs-bundle", refs, record(bundle, message));
      add(out, "seed-refs-no-bundle", refs, record({}, message));
    }
  }
  {
    std::string payload;
    auto kind =
      encode_error(std::make_exception_ptr(weft::task_error("std::runtime_error", "bad", {"at f", "at g"})), payload);
    add(out, "seed-error-task", errors, std::string(1, static_cast<char>(kind)) + payload);
    kind = encode_error(std::make_exception_ptr(weft::worker_crashed_error("killed", 9, -1)), payload);
    add(out, "seed-error-crashed", errors, std::string(1, static_cast<char>(kind)) + payload);
    kind = encode_error(std::make_exception_ptr(weft::actor_died_error("gone")), payload);
    add(out, "seed-error-other", errors, std::string(1, static_cast<char>(kind)) + payload);
  }
  {
    std::string batch;
    wire::writer w(batch);
    auto put = [&](std::uint8_t type, const auto& rec) {
      std::string s;
      rec.write(s);
      w.put(type);
      w.put_bytes(s);
    };
    std::string matchers;
    wire::put_code_ref(matchers, code_ref{0, 0x1234});
    const std::uint64_t ids[] = {2, 4};
    const std::string_view packed(reinterpret_cast<const char*>(ids), sizeof ids);
    put(0, wire::call_record{7, {0, 0x100}, {0, 0x200}, "args", matchers, packed});
    put(0, wire::call_record{8, {0, 0x100}, {0, 0x200}, "ref", matchers, packed, true}); // (args in the store)
    put(1, wire::done_record{7, wire::status::ok, 12, "result", {}, {}});
    const std::uint64_t block = 4096;
    put(1, wire::done_record{8,
                             wire::status::ok,
                             12,
                             "ref",
                             std::string_view(reinterpret_cast<const char*>(&block), sizeof block),
                             {},
                             true});
    put(2, wire::actor_create_record{{0, 1}, {0, 2}, "ctor", 5, false, "name", "ns", packed, 2});
    wire::actor_call_record call;
    call.seq = 8;
    call.invoker = {0, 3};
    call.is_virtual = true;
    call.coroutine = true;
    call.stored = true;
    call.method = {0, 4};
    call.vword = 17;
    call.adjust = -8;
    call.args = "args";
    call.refs = packed;
    put(3, call);
    put(4, wire::submit_record{{0, 5}, {0, 6}, "args", "options", matchers, {}});
    put(5, wire::actor_make_record{{0, 7}, {0, 8}, {0, 9}, {0, 10}, "args", "options", true});
    std::string bundle;
    wire::bundle_entry held;
    held.id = 2;
    held.write(bundle);
    wire::bundle_entry value;
    value.k = wire::bundle_entry::kind::value;
    value.id = 9;
    value.payload = "v";
    value.write(bundle);
    put(6, wire::bundle_entry{}); // (a lone held entry of id 0)
    w.put(std::uint8_t{6});
    w.put_bytes(bundle);
    add(out, "seed-records", records, batch);
  }
  {
    // A lane: a whole message (kind done), a read, then a release message.
    std::string steps;
    wire::writer w(steps);
    auto fragment = [&](std::uint8_t kind, bool last, std::string_view body) {
      std::string f;
      wire::writer fw(f);
      fw.put(static_cast<std::uint32_t>(body.size()));
      fw.put(kind);
      fw.put(static_cast<std::uint8_t>(last ? 1 : 0));
      fw.put(std::uint16_t{0});
      f += body;
      f.resize((f.size() + 7) & ~std::size_t{7}, '\0');
      w.put(std::uint8_t{0});
      w.put(static_cast<std::uint16_t>(f.size()));
      steps += f;
    };
    fragment(16, true, "a batch of results");
    w.put(std::uint8_t{3});
    fragment(21, true, std::string(16, '\x01'));
    add(out, "seed-lane", lanes, steps);
  }
}

} // namespace wire_fuzz

void decode_wire_kind(int kind, std::span<const std::byte> bytes) {
  switch (kind) {
  case 6:
    wire_fuzz::decode_arrays(bytes);
    break;
  case 7:
    wire_fuzz::decode_refs(bytes);
    break;
  case 8:
    wire_fuzz::decode_error(bytes);
    break;
  case 9:
    wire_fuzz::decode_records(bytes);
    break;
  default:
    wire_fuzz::drive_lane(bytes);
    break;
  }
}

void add_wire_seeds(std::vector<std::pair<std::string, std::vector<std::byte>>>& seeds) { wire_fuzz::add_seeds(seeds); }

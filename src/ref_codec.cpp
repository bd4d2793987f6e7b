#include "ref_codec.hpp"

#include <typeinfo>

#include "runtime.hpp"
#include "weft/array.hpp"
#include "weft/errors.hpp"

namespace weft::detail {

namespace {
thread_local ref_codec* tls_codec = nullptr;
} // namespace

ref_codec_scope::ref_codec_scope(ref_codec* codec) noexcept : before_(tls_codec) { tls_codec = codec; }
ref_codec_scope::~ref_codec_scope() { tls_codec = before_; }

ref_codec* current_ref_codec() noexcept { return tls_codec; }

std::uint64_t encode_ref(object_state* cell, ref_ops_fn ops) {
  if (!cell)
    return 0; // an invalid ref stays invalid
  if (!tls_codec)
    throw serialization_error(
      "weft: an object_ref (or actor_handle) can be sent only inside weft's own messages (the arguments and results "
      "of tasks and actor methods in worker processes); to_bytes cannot write one: it names an object of this "
      "running node");
  return tls_codec->encode(cell, ops);
}

object_ptr decode_ref(std::uint64_t id, ref_ops_fn ops) {
  if (id == 0)
    return object_ptr();
  if (!tls_codec)
    throw serialization_error(
      "weft: an object_ref (or actor_handle) can be read only from weft's own messages, not with from_bytes");
  return tls_codec->decode(id, ops);
}

std::uint64_t ref_collector::encode(object_state* cell, ref_ops_fn ops) {
  refs.push_back({object_ptr(cell), ops});
  return cell->id().value;
}

object_ptr ref_collector::decode(std::uint64_t, ref_ops_fn) {
  throw serialization_error("weft: internal error: an object_ref read while a message is written");
}

std::uint64_t ref_table::encode(object_state*, ref_ops_fn) {
  throw serialization_error("weft: internal error: an object_ref written while a message is read");
}

object_ptr ref_table::decode(std::uint64_t id, ref_ops_fn ops) {
  auto it = refs.find(id);
  if (it == refs.end())
    throw serialization_error("weft: corrupted input: an object_ref names " + to_string(object_id{id}) +
                              ", which the message does not carry");
  if (it->second.ops != ops)
    throw serialization_error("weft: an object_ref names " + to_string(object_id{id}) +
                              ", an object of another type than the ref's");
  return it->second.cell;
}

std::string packed_ids(const std::vector<carried_ref>& refs) {
  std::string out;
  out.reserve(refs.size() * sizeof(std::uint64_t));
  for (const auto& r : refs) {
    const std::uint64_t id = r.cell->id().value;
    out.append(reinterpret_cast<const char*>(&id), sizeof id);
  }
  return out;
}

error_kind encode_error(const std::exception_ptr& e, std::string& payload) {
  payload.clear();
  try {
    std::rethrow_exception(e);
  } catch (const task_error& x) {
    encode_each(payload, x.type_name(), x.message(), x.chain());
    return error_kind::task_error;
  } catch (const worker_crashed_error& x) {
    encode_each(payload, std::string(x.what()), x.signal(), x.exit_code());
    return error_kind::crashed;
  } catch (const std::exception& x) {
    encode_each(payload, demangled(typeid(x).name()), std::string(x.what()));
    return error_kind::other;
  } catch (...) {
    encode_each(payload, std::string("unknown"), std::string("weft: a failure that is not a std::exception"));
    return error_kind::other;
  }
}

std::exception_ptr rebuild_error(error_kind kind, std::string_view payload) {
  try {
    switch (kind) {
    case error_kind::task_error: {
      std::string type, message;
      std::vector<std::string> chain;
      decode_each(payload, type, message, chain);
      return std::make_exception_ptr(task_error(type, message, chain));
    }
    case error_kind::crashed: {
      std::string message;
      int signal = 0, code = -1;
      decode_each(payload, message, signal, code);
      return std::make_exception_ptr(worker_crashed_error(message, signal, code));
    }
    default: {
      std::string type, m;
      decode_each(payload, type, m);
      if (type == "weft::task_cancelled_error")
        return std::make_exception_ptr(task_cancelled_error(m));
      if (type == "weft::runtime_shutdown_error")
        return std::make_exception_ptr(runtime_shutdown_error(m));
      if (type == "weft::serialization_error")
        return std::make_exception_ptr(serialization_error(m));
      if (type == "weft::resource_error")
        return std::make_exception_ptr(resource_error(m));
      if (type == "weft::invalid_argument_error")
        return std::make_exception_ptr(invalid_argument_error(m));
      if (type == "weft::worker_start_error")
        return std::make_exception_ptr(worker_start_error(m));
      if (type == "weft::object_store_full_error")
        return std::make_exception_ptr(object_store_full_error(m));
      if (type == "weft::actor_died_error")
        return std::make_exception_ptr(actor_died_error(m));
      if (type == "weft::get_timeout_error")
        return std::make_exception_ptr(get_timeout_error(m));
      return std::make_exception_ptr(error(m));
    }
    }
  } catch (const serialization_error&) {
    return std::current_exception();
  }
}

} // namespace weft::detail

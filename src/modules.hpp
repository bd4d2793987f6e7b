// Private: naming code across processes without registration.
//
// Every process of a weft program runs the same executable (workers are
// the driver's own binary started again), so a function is named by the
// module (executable or shared library) that holds it and its offset from
// that module's load address. Modules are matched by their GNU build id,
// which the linker derives from the module's contents: a worker of another
// build does not match and is refused at connect. See docs/processes.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace weft::detail {

/// A code address as another process of the same build can find it.
struct code_ref {
  std::uint32_t module = 0; ///< index into the driver's module_table
  std::uint64_t offset = 0; ///< from the module's load address
};

class module_table {
public:
  struct module {
    std::string build_id; ///< hex; empty modules (no build id) are not listed
    std::string path;     ///< for messages only
    std::uintptr_t base = 0;
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> code; ///< executable segments [begin, end)
  };

  /// The modules loaded in this process now.
  static module_table loaded();

  /// Build id of the main executable ("" if it has none).
  const std::string& main_build_id() const;
  const std::vector<module>& modules() const noexcept { return modules_; }

  /// Where `addr` (code in this process) lies, or nothing if it is in no
  /// module with a build id.
  std::optional<code_ref> locate(const void* addr) const;

  /// Wire form: the build ids, in index order.
  std::string encode() const;
  /// Worker side: for each of the driver's modules (wire form), this
  /// process's module with the same build id, or a message naming what is
  /// missing. Fills `bases` (0 for a module missing here).
  std::string match(std::string_view driver_wire, std::vector<const module*>& out) const;

private:
  std::vector<module> modules_;
};

} // namespace weft::detail

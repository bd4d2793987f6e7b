#include "modules.hpp"

#include <elf.h>
#include <link.h>

#include <cstring>

namespace weft::detail {

namespace {

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(digits[p[i] >> 4]);
    s.push_back(digits[p[i] & 15]);
  }
  return s;
}

std::string build_id_of(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE)
      continue;
    const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    const auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      ElfW(Nhdr) nh;
      std::memcpy(&nh, p, sizeof nh);
      const auto* name = p + sizeof nh;
      const auto* desc = name + ((nh.n_namesz + 3) & ~3u);
      const auto* next = desc + ((nh.n_descsz + 3) & ~3u);
      if (next > end)
        break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
        return hex(desc, nh.n_descsz);
      p = next;
    }
  }
  return {};
}

int collect(dl_phdr_info* info, std::size_t, void* data) {
  auto* out = static_cast<std::vector<module_table::module>*>(data);
  module_table::module m;
  m.build_id = build_id_of(info);
  if (m.build_id.empty())
    return 0;
  m.path = info->dlpi_name ? info->dlpi_name : "";
  if (out->empty() && m.path.empty())
    m.path = "(main executable)";
  m.base = info->dlpi_addr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X))
      m.code.emplace_back(info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
  }
  out->push_back(std::move(m));
  return 0;
}

} // namespace

module_table module_table::loaded() {
  module_table t;
  dl_iterate_phdr(&collect, &t.modules_);
  return t;
}

const std::string& module_table::main_build_id() const {
  static const std::string none;
  // dl_iterate_phdr reports the main executable first.
  return modules_.empty() ? none : modules_.front().build_id;
}

std::optional<code_ref> module_table::locate(const void* addr) const {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  for (std::size_t i = 0; i < modules_.size(); ++i)
    for (auto [b, e] : modules_[i].code)
      if (a >= b && a < e)
        return code_ref{static_cast<std::uint32_t>(i), a - modules_[i].base};
  return std::nullopt;
}

std::string module_table::encode() const {
  std::string s;
  for (const auto& m : modules_) {
    s += m.build_id;
    s += '\n';
  }
  return s;
}

std::string module_table::match(std::string_view wire, std::vector<const module*>& out) const {
  out.clear();
  std::string missing;
  while (!wire.empty()) {
    auto nl = wire.find('\n');
    std::string_view id = wire.substr(0, nl);
    const module* found = nullptr;
    for (const auto& m : modules_)
      if (m.build_id == id)
        found = &m;
    if (!found && out.empty())
      missing =
        "the main executable differs (driver build id " + std::string(id) + ", this worker's " + main_build_id() + ")";
    out.push_back(found);
    if (nl == std::string_view::npos)
      break;
    wire.remove_prefix(nl + 1);
  }
  return missing;
}

} // namespace weft::detail

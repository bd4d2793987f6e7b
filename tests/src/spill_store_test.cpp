// Arrays spilled to files when the shared store is full
// (src/spill_store.cpp): a file per array, mapped by every process that
// reads it, counted in its header, unlinked by the last release; and
// references from untrusted bytes that never open anything else.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "src/spill_store.hpp"
#include "weft_test.hpp"

using Catch::Matchers::Contains;
using weft::detail::spill_store;

namespace {

/// A fresh parent directory, removed at scope exit.
struct parent_dir {
  std::filesystem::path path;
  parent_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "weft-spill-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()));
    path = tmpl;
  }
  ~parent_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

constexpr std::uint64_t spill_bit = std::uint64_t{1} << 63;

} // namespace

TEST_CASE("a spilled array is a file counted by every process that maps it") {
  parent_dir parent;
  auto store = spill_store::create((parent.path / "made" / "here").string()); // made if missing
  CHECK(store->directory().find((parent.path / "made" / "here").string()) == 0);
  CHECK_FALSE(std::filesystem::exists(store->directory())); // made at the first spill
  auto m = store->create_file(100'000);
  CHECK((std::filesystem::status(store->directory()).permissions() & std::filesystem::perms::all) ==
        std::filesystem::perms::owner_all);
  CHECK(spill_store::is_spill_reference(m.ref));
  CHECK(m.ref % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(m.data()) % 64 == 0);
  std::memset(m.data(), 0x5a, 100'000);
  CHECK(store->files() == 1);
  // Another process opens it by reference and sees the same bytes.
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 1;
    try {
      auto other = spill_store::open(store->directory());
      auto o = other->open_file(m.ref, 100'000, false);
      rc = o.data()[99'999] == std::byte{0x5a} ? 0 : 2;
      other->release(o);
    } catch (...) {
    }
    ::_exit(rc);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK(store->files() == 1); // the other process's reference is gone, not ours
  spill_store::add_ref(m);    // a reference handed over, released without a mapping
  store->release(m.ref);
  CHECK(store->files() == 1);
  store->release(m);
  CHECK(store->files() == 0); // the last release unlinks it
  store->release(m.ref);      // a reference to nothing: ignored
  const std::string dir = store->directory();
  store.reset();
  CHECK_FALSE(std::filesystem::exists(dir));
}

TEST_CASE("a spill reference from untrusted bytes opens only a spill file of the directory") {
  parent_dir parent;
  auto store = spill_store::create(parent.path.string());
  auto m = store->create_file(4096);
  auto refused = [&](std::uint64_t ref, std::size_t bytes = 0) {
    return weft_test::what_of<weft::serialization_error>([&] { store->open_file(ref, bytes, false); });
  };
  CHECK_THAT(refused(m.ref, 4097), Contains("not a spill file of this node, or of another size"));
  CHECK_THAT(refused(0x1000), Contains("not a spill reference"));
  CHECK_THAT(refused(spill_bit | 0x41), Contains("not a spill reference"));
  CHECK_THAT(refused(spill_bit | 0x40), Contains("cannot open"));
  std::ofstream(store->directory() + "/8000000000000080") << "not a spill file";
  CHECK_THAT(refused(spill_bit | 0x80), Contains("not a spill file"));
  std::filesystem::create_symlink("/etc/passwd", store->directory() + "/80000000000000c0");
  CHECK_THAT(refused(spill_bit | 0xc0), Contains("cannot open"));
  std::filesystem::create_directory(store->directory() + "/8000000000000100");
  CHECK_THAT(refused(spill_bit | 0x100), Contains("Is a directory"));
  store->release(m);
  CHECK(store->files() == 3); // the intruders (removed with the directory)
  const std::string dir = store->directory();
  store.reset();
  CHECK(std::filesystem::exists(dir)); // not empty: a directory that is not a spill file stays
}

TEST_CASE("a spill directory that cannot be made says why") {
  CHECK_THAT(weft_test::what_of<weft::error>([] { spill_store::create("/proc/weft-cannot-be-here"); }),
             Contains("/proc/weft-cannot-be-here"));
}

TEST_CASE("a spill directory someone else may enter is not used") {
  parent_dir parent;
  auto store = spill_store::create(parent.path.string());
  REQUIRE(::mkdir(store->directory().c_str(), 0755) == 0); // made first, open to others
  CHECK_THAT(weft_test::what_of<weft::object_store_full_error>([&] { store->create_file(10); }),
             Contains("cannot make the directory"));
  CHECK_THAT(weft_test::what_of<weft::serialization_error>([&] { store->open_file(spill_bit | 0x40, 0, false); }),
             Contains("no spill directory"));
}

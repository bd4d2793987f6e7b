// Restarts: a key-value primary that crashes comes back and re-syncs its data from a backup actor.
#include <weft/weft.hpp>

#include <cstdio>
#include <map>
#include <string>

// Keeps a copy of every write; never restarts.
struct kv_backup {
  std::map<std::string, std::string> data;
  void put(std::string key, std::string value) { data[key] = value; }
  std::map<std::string, std::string> snapshot() const { return data; }
};

// Serves reads and writes. A write is acknowledged only once the backup has it, so a restarted
// primary can rebuild everything it acknowledged.
struct kv_primary {
  explicit kv_primary(weft::actor_handle<kv_backup> backup) : backup(backup) {
    if (weft::runtime_context().was_current_actor_restarted()) {
      data = weft::get(backup.task(&kv_backup::snapshot).remote());
      std::printf("primary restarted: re-synced %zu keys from the backup\n", data.size());
    }
  }
  void put(std::string key, std::string value) {
    weft::get(backup.task(&kv_backup::put).remote(key, value));
    data[key] = value;
  }
  std::string get(std::string key) const {
    auto it = data.find(key);
    return it == data.end() ? "<missing>" : it->second;
  }
  std::size_t size() const { return data.size(); }

  weft::actor_handle<kv_backup> backup;
  std::map<std::string, std::string> data;
};

int main(int argc, char** argv) {
  weft::init(argc, argv);
  auto backup = weft::remote<kv_backup>().remote();
  auto primary = weft::remote<kv_primary>().options({.max_restarts = 1}).remote(backup);

  weft::get(primary.task(&kv_primary::put).remote("alice", "42 Main St"));
  weft::get(primary.task(&kv_primary::put).remote("bob", "7 Elm Rd"));
  std::printf("before the crash: %zu keys\n", weft::get(primary.task(&kv_primary::size).remote()));

  // Crash the primary; with no_restart = false it restarts (max_restarts = 1) and its constructor re-syncs.
  weft::kill(primary, {.no_restart = false});

  // Calls made meanwhile wait for the new incarnation.
  std::printf("after the restart: alice -> %s, bob -> %s\n",
              weft::get(primary.task(&kv_primary::get).remote("alice")).c_str(),
              weft::get(primary.task(&kv_primary::get).remote("bob")).c_str());
  weft::shutdown();
}

// Actor pools: spread work over a few actors and get the results back in order, or as they finish.
#include <weft/weft.hpp>

#include <cstdio>
#include <string>
#include <vector>

// A worker that keeps state across calls: the number of words it has counted so far.
struct word_counter {
  int counted = 0;
  int count_words(std::string line) {
    int words = 0;
    bool in_word = false;
    for (char ch : line) {
      const bool letter = ch != ' ';
      if (letter && !in_word)
        ++words;
      in_word = letter;
    }
    counted += words;
    return words;
  }
  int total() const { return counted; }
};

int main(int argc, char** argv) {
  weft::init(argc, argv);
  const auto word_counter_r = weft::remote<word_counter>();
  const std::vector<weft::actor_handle<word_counter>> actors{word_counter_r.remote(), word_counter_r.remote(),
                                                             word_counter_r.remote()};
  weft::actor_pool<word_counter> pool(actors);

  const std::vector<std::string> lines{"the quick brown fox", "jumps over",       "the lazy dog",
                                       "actors keep state",   "pools share work", "one line per call"};
  // fn(actor, value) makes one call; the pool runs at most one per actor and queues the rest.
  auto count = [](const weft::actor_handle<word_counter>& a, const std::string& line) {
    return a.task(&word_counter::count_words).remote(line);
  };

  const std::vector<int> words = pool.map(count, lines); // in the order of `lines`
  for (std::size_t i = 0; i < lines.size(); ++i)
    std::printf("%d words: \"%s\"\n", words[i], lines[i].c_str());

  // The same work again, taking each result as soon as it is ready.
  int sum = 0;
  for (int n : pool.map_unordered(count, lines))
    sum += n;
  std::printf("map_unordered: %d words in all\n", sum);

  // Each actor kept its own count; together they saw every word twice.
  int per_actor = 0;
  for (const auto& a : actors)
    per_actor += weft::get(a.task(&word_counter::total).remote());
  std::printf("the three actors counted %d words between them\n", per_actor);

  weft::shutdown();
}

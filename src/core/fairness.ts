// Which queue a multi-queue executor is served from: a weighted random order of its queues, from which the store
// serves the first queue with an available job. Drawing without replacement by weight means that, among the
// queues that have work, each is chosen with a probability proportional to its weight (builds=3,tests=1: three
// builds for every test, while both have jobs; all builds when tests are empty).

/** The queues in a random order where each next queue is drawn with probability proportional to its weight. */
export function weightedOrder(
  queues: string[],
  weights: Record<string, number>,
  random: () => number = Math.random,
): string[] {
  const left = queues.map((queue) => ({ queue, weight: weights[queue] ?? 1 }));
  const order: string[] = [];
  while (left.length) {
    const total = left.reduce((sum, q) => sum + q.weight, 0);
    let draw = random() * total;
    let index = left.findIndex((q) => (draw -= q.weight) < 0);
    if (index < 0) index = left.length - 1; // rounding at the very top of the range
    order.push(left[index].queue);
    left.splice(index, 1);
  }
  return order;
}

/**
 * Peak-memory accounting for one preprocessing run: pixel buffers as they are allocated and released,
 * plus the decoders' wasm memories (which only grow, so their current size is their high-water mark).
 */
export class MemoryMeter {
  #live = 0;
  #wasm = 0;
  #peak = 0;

  alloc(bytes: number): void {
    this.#live += bytes;
    this.#update();
  }

  free(bytes: number): void {
    this.#live -= bytes;
  }

  /** Record the decoders' wasm memory size now. */
  wasm(bytes: number): void {
    this.#wasm = Math.max(this.#wasm, bytes);
    this.#update();
  }

  get peak(): number {
    return this.#peak;
  }

  #update(): void {
    this.#peak = Math.max(this.#peak, this.#live + this.#wasm);
  }
}

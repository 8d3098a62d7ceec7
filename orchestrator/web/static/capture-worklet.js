// Microphone -> 16 kHz mono signed 16-bit PCM in 20 ms frames (320 samples), posted to the page.
// Runs on the audio thread: low-pass (windowed sinc) at the context's rate, then linear
// interpolation at 16 kHz positions.
const TARGET_RATE = 16000;
const FRAME_SAMPLES = 320;

function lowpass(cutoff, taps) {
  // cutoff: fraction of the input rate; Hamming-windowed sinc, unity gain at DC.
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    h[i] = sinc * (0.54 - 0.46 * Math.cos((2 * Math.PI * i) / (taps - 1)));
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.taps = this.step > 1 ? lowpass((0.45 * TARGET_RATE) / sampleRate, 63) : new Float32Array([1]);
    this.ring = new Float32Array(this.taps.length);
    this.head = 0;
    this.index = 0; // input samples seen
    this.next = 0; // input position of the next output sample
    this.prev = 0; // previous filtered sample
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const taps = this.taps;
    const size = taps.length;
    for (let i = 0; i < input[0].length; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      this.ring[this.head] = x / channels;
      let y = 0;
      let k = this.head;
      for (let j = 0; j < size; j++) {
        y += taps[j] * this.ring[k];
        k = k === 0 ? size - 1 : k - 1;
      }
      this.head = (this.head + 1) % size;
      // Output samples whose positions fall in (index - 1, index].
      while (this.next <= this.index) {
        const frac = this.next - (this.index - 1);
        this.emit(this.prev + (y - this.prev) * frac);
        this.next += this.step;
      }
      this.prev = y;
      this.index += 1;
    }
    return true;
  }

  emit(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.peak = Math.max(this.peak, Math.abs(s));
    this.frame[this.filled++] = s < 0 ? s * 32768 : s * 32767;
    if (this.filled === FRAME_SAMPLES) {
      this.port.postMessage({ pcm: this.frame.buffer, peak: this.peak }, [this.frame.buffer]);
      this.frame = new Int16Array(FRAME_SAMPLES);
      this.filled = 0;
      this.peak = 0;
    }
  }
}

registerProcessor("capture-16k", CaptureProcessor);

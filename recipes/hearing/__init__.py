"""The experimental pretrained job's pieces (`scripts.demo --pretrained`): a real Whisper tiny.en and a real
SmolLM2-135M-Instruct (`audio_adapter.pretrained.offline_parts`) taught to hear eSpeak speech.

* `texts`: what is spoken: sentences, and spoken questions whose templates are split into training and held-out.
* `data`: the spoken clips (many eSpeak speakers) written as the usual manifests + shards.
* `lm_answers`: the language model's own answers to the TYPED questions (the self-distillation targets).
* `peer`: Whisper tiny.en's own decoder on the same clips (the peer the transcription WER is compared with).
* `scoring`: word normalisation ("317" = "3 1 7" = "three one seven"), WER, answer agreement.
* `recipe`: the stage YAMLs (from the tiny recipes) pointed at the assembled model.
"""

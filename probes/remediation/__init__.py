"""Remediation: take a detected backdoor out of a copy of the model, prove it is gone, and build an input filter.

Modules (one concept each; none imports textual, torch is imported lazily):

* :mod:`~probes.remediation.params` - the declared settings (:class:`~probes.params.Param`);
* :mod:`~probes.remediation.image_model` - copying, trainable check, head access and saving an image classifier
  in its own format;
* :mod:`~probes.remediation.image_unlearn` - fine-tune on clean data carrying the recovered trigger, true labels;
* :mod:`~probes.remediation.image_prune` - prune penultimate units by their clean/stamped activation gap;
* :mod:`~probes.remediation.lm_unlearn` - fine-tune a causal LM so prompts with the confirmed trigger get the
  clean model's own answers;
* :mod:`~probes.remediation.input_filter` - JSON rules (no code) that detect the trigger at the input, with
  their measured false-rejection rate;
* :mod:`~probes.remediation.evidence` - before/after figures on held-out data;
* :mod:`~probes.remediation.image` / :mod:`~probes.remediation.lm` - the whole repair of one subject.

Every long function takes a :class:`~probes.context.RunContext` (its ``cancel`` event and ``progress``).
"""

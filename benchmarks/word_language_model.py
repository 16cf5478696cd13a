"""Reference baseline: PyTorch's official `word_language_model` example, LSTM at its defaults.

    python benchmarks/word_language_model.py --train FILE --test FILE [--valid FILE]
                                             [--budget SECONDS] [--threads N]

Source: https://github.com/pytorch/examples, folder `word_language_model` (main.py, model.py,
data.py). Copyright (c) 2017, Facebook (now Meta Platforms), Inc. and contributors; used under
the BSD-3-Clause licence of pytorch/examples:

    Redistribution and use in source and binary forms, with or without modification, are
    permitted provided that the following conditions are met: (1) Redistributions of source code
    must retain the above copyright notice, this list of conditions and the following
    disclaimer. (2) Redistributions in binary form must reproduce the above copyright notice,
    this list of conditions and the following disclaimer in the documentation and/or other
    materials provided with the distribution. (3) Neither the name of the copyright holder nor
    the names of its contributors may be used to endorse or promote products derived from this
    software without specific prior written permission. THIS SOFTWARE IS PROVIDED BY THE
    COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING,
    BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR
    PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR
    ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING,
    BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR
    PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN
    CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY
    OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

Everything the example does at its defaults is kept: model "LSTM", emsize 200, nhid 200,
nlayers 2, lr 20 with plain SGD (`p.data.add_(p.grad, alpha=-lr)`), clip 0.25, epochs 40,
batch_size 20, bptt 35, dropout 0.2, tied False, seed 1111, eval_batch_size 10, log-interval 200,
lr /= 4 whenever the validation loss does not improve, the best-validation model used for the
final test (as on the example's Ctrl+C path), Dictionary/Corpus tokenization (whitespace split
plus '<eos>' per line, one dictionary grown over train, valid and test in that order),
RNNModel (Embedding -> Dropout -> nn.LSTM(dropout) -> Dropout -> Linear -> log_softmax, with
uniform(+-0.1) encoder/decoder weights and a zero decoder bias), NLLLoss, batchify,
repackage_hidden, get_batch, train and evaluate.

Changes from the original (and only these):
  1. data.py, model.py and main.py are merged into this one file; the main.py part lives in
     `main()` (train/evaluate/get_batch/batchify are closures over its variables rather than
     module globals). Only the LSTM branch of RNNModel and of train/evaluate is kept (the
     RNN_TANH/RNN_RELU/GRU/Transformer branches, tied weights, generate.py and the ONNX export
     are not reachable at the defaults and are dropped), as are the Python 2 leftovers
     `# coding: utf-8` and `from io import open`. Code is reformatted by `ruff format`.
  2. Command line: `--train`, `--test`, optional `--valid` file paths replace `--data DIR`;
     Corpus takes these three paths instead of DIR/{train,valid,test}.txt. Without `--valid`,
     the test file is used for the per-epoch validation and the log lines say "test".
     The other options of the original are fixed at their defaults.
  3. `--budget SECONDS` (default 130): the wall-clock time spent in training (evaluation
     excluded) is checked after every batch; when it reaches the budget training stops, as if
     Ctrl+C had been pressed in the original (same path: the best-validation model is used for
     testing; if no epoch finished yet, the current model is used).
  4. `--threads N` (default: all cores, os.cpu_count()) -> torch.set_num_threads(N). CPU only:
     the --cuda/--mps/--accel device selection is dropped.
  5. The best model is kept in memory (a deep copy of its state_dict) instead of being saved to
     `model.pt` with torch.save and read back with torch.load.
  6. Log lines go to stderr; stdout gets one JSON line: test_loss, test_ppl, train_tokens_seen
     (training targets processed), seconds (training time, evaluation excluded), epochs
     (completed epochs plus the fraction of batches done in an unfinished one), vocab
     (len(dictionary)) and test_tokens (tokens in the test file, '<eos>' included).
"""

import argparse
import copy
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

###############################################################################
# data.py
###############################################################################


class Dictionary(object):  # noqa: UP004 - as in the original
    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self):
        return len(self.idx2word)


class Corpus(object):  # noqa: UP004 - as in the original
    def __init__(self, train_path, valid_path, test_path):
        self.dictionary = Dictionary()
        self.train = self.tokenize(train_path)
        self.valid = self.tokenize(valid_path)
        self.test = self.tokenize(test_path)

    def tokenize(self, path):
        """Tokenizes a text file."""
        assert os.path.exists(path)
        # Add words to the dictionary
        with open(path, "r", encoding="utf8") as f:  # noqa: UP015 - as in the original
            for line in f:
                words = line.split() + ["<eos>"]
                for word in words:
                    self.dictionary.add_word(word)

        # Tokenize file content
        with open(path, "r", encoding="utf8") as f:  # noqa: UP015 - as in the original
            idss = []
            for line in f:
                words = line.split() + ["<eos>"]
                ids = []
                for word in words:
                    ids.append(self.dictionary.word2idx[word])
                idss.append(torch.tensor(ids).type(torch.int64))
            ids = torch.cat(idss)

        return ids


###############################################################################
# model.py
###############################################################################


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super(RNNModel, self).__init__()  # noqa: UP008 - as in the original
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ["LSTM", "GRU"]:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            raise ValueError("this copy keeps only the LSTM/GRU branch of the original")
        self.decoder = nn.Linear(nhid, ntoken)

        if tie_weights:
            raise ValueError("this copy does not keep the --tied branch of the original")

        self.init_weights()

        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (
                weight.new_zeros(self.nlayers, bsz, self.nhid),
                weight.new_zeros(self.nlayers, bsz, self.nhid),
            )
        else:
            return weight.new_zeros(self.nlayers, bsz, self.nhid)


###############################################################################
# main.py
###############################################################################


def repackage_hidden(h):
    """Wraps hidden states in new Tensors, to detach them from their history."""

    if isinstance(h, torch.Tensor):
        return h.detach()
    else:
        return tuple(repackage_hidden(v) for v in h)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="PyTorch word_language_model example (LSTM, defaults) in a time budget"
    )
    parser.add_argument("--train", type=str, required=True, help="training text file")
    parser.add_argument("--test", type=str, required=True, help="test text file")
    parser.add_argument(
        "--valid", type=str, default=None, help="validation text file (default: the test file)"
    )
    parser.add_argument(
        "--budget", type=float, default=130, help="training seconds, evaluation excluded"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)"
    )
    cli = parser.parse_args(argv)

    # The original's options, fixed at their defaults.
    args = argparse.Namespace(
        model="LSTM",
        emsize=200,
        nhid=200,
        nlayers=2,
        lr=20,
        clip=0.25,
        epochs=40,
        batch_size=20,
        bptt=35,
        dropout=0.2,
        tied=False,
        seed=1111,
        log_interval=200,
    )
    valid_name = "valid" if cli.valid is not None else "test"

    def log(*a):
        print(*a, file=sys.stderr, flush=True)

    torch.set_num_threads(cli.threads)

    # Set the random seed manually for reproducibility.
    torch.manual_seed(args.seed)

    device = torch.device("cpu")

    ###########################################################################
    # Load data
    ###########################################################################

    corpus = Corpus(cli.train, cli.valid if cli.valid is not None else cli.test, cli.test)

    # Starting from sequential data, batchify arranges the dataset into columns.
    # For instance, with the alphabet as the sequence and batch size 4, we'd get
    # ┌ a g m s ┐
    # │ b h n t │
    # │ c i o u │
    # │ d j p v │
    # │ e k q w │
    # └ f l r x ┘.
    # These columns are treated as independent by the model, which means that the
    # dependence of e. g. 'g' on 'f' can not be learned, but allows more efficient
    # batch processing.

    def batchify(data, bsz):
        # Work out how cleanly we can divide the dataset into bsz parts.
        nbatch = data.size(0) // bsz
        # Trim off any extra elements that wouldn't cleanly fit (remainders).
        data = data.narrow(0, 0, nbatch * bsz)
        # Evenly divide the data across the bsz batches.
        data = data.view(bsz, -1).t().contiguous()
        return data.to(device)

    eval_batch_size = 10
    train_data = batchify(corpus.train, args.batch_size)
    val_data = batchify(corpus.valid, eval_batch_size)
    test_data = batchify(corpus.test, eval_batch_size)

    ###########################################################################
    # Build the model
    ###########################################################################

    ntokens = len(corpus.dictionary)
    model = RNNModel(
        args.model, ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied
    ).to(device)

    criterion = nn.NLLLoss()

    ###########################################################################
    # Training code
    ###########################################################################

    # get_batch subdivides the source data into chunks of length args.bptt.
    # If source is equal to the example output of the batchify function, with
    # a bptt-limit of 2, we'd get the following two Variables for i = 0:
    # ┌ a g m s ┐ ┌ b h n t ┐
    # └ b h n t ┘ └ c i o u ┘
    # Note that despite the name of the function, the subdivison of data is not
    # done along the batch dimension (i.e. dimension 1), since that was handled
    # by the batchify function. The chunks are along dimension 0, corresponding
    # to the seq_len dimension in the LSTM.

    def get_batch(source, i):
        seq_len = min(args.bptt, len(source) - 1 - i)
        data = source[i : i + seq_len]
        target = source[i + 1 : i + 1 + seq_len].view(-1)
        return data, target

    def evaluate(data_source):
        # Turn on evaluation mode which disables dropout.
        model.eval()
        total_loss = 0.0
        hidden = model.init_hidden(eval_batch_size)
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, args.bptt):
                data, targets = get_batch(data_source, i)
                output, hidden = model(data, hidden)
                hidden = repackage_hidden(hidden)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    # Budget bookkeeping (change 3 and 6).
    state = {"seconds": 0.0, "tokens": 0, "batches": 0, "stopped": False}
    nbatches = len(range(0, train_data.size(0) - 1, args.bptt))

    def train():
        # Turn on training mode which enables dropout.
        model.train()
        total_loss = 0.0
        start_time = time.time()
        budget_start, budget_before = time.time(), state["seconds"]
        state["batches"] = 0
        hidden = model.init_hidden(args.batch_size)
        for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
            data, targets = get_batch(train_data, i)
            # Starting each batch, we detach the hidden state from how it was previously produced.
            # If we didn't, the model would try backpropagating all the way to start of the
            # dataset.
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()

            # `clip_grad_norm` helps prevent the exploding gradient problem in RNNs / LSTMs.
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)

            total_loss += loss.item()

            if batch % args.log_interval == 0 and batch > 0:
                cur_loss = total_loss / args.log_interval
                elapsed = time.time() - start_time
                log(
                    "| epoch {:3d} | {:5d}/{:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | "  # noqa: UP032 - as in the original
                    "loss {:5.2f} | ppl {:8.2f}".format(
                        epoch,
                        batch,
                        len(train_data) // args.bptt,
                        lr,
                        elapsed * 1000 / args.log_interval,
                        cur_loss,
                        math.exp(cur_loss),
                    )
                )
                total_loss = 0
                start_time = time.time()

            state["tokens"] += targets.numel()
            state["batches"] = batch + 1
            state["seconds"] = budget_before + (time.time() - budget_start)
            if state["seconds"] >= cli.budget:
                state["stopped"] = True
                break

    # Loop over epochs.
    lr = args.lr
    best_val_loss = None
    best_state = None
    epochs_done = 0

    # At any point you can hit Ctrl + C to break out of training early.
    # (Here: training also stops when the budget is spent, by the same path.)
    try:
        for epoch in range(1, args.epochs + 1):
            epoch_start_time = time.time()
            train()
            if state["stopped"]:
                raise KeyboardInterrupt
            epochs_done = epoch
            val_loss = evaluate(val_data)
            log("-" * 89)
            log(
                "| end of epoch {:3d} | time: {:5.2f}s | {} loss {:5.2f} | {} ppl {:8.2f}".format(  # noqa: UP032
                    epoch,
                    (time.time() - epoch_start_time),
                    valid_name,
                    val_loss,
                    valid_name,
                    math.exp(val_loss),
                )
            )
            log("-" * 89)
            # Save the model if the validation loss is the best we've seen so far.
            if not best_val_loss or val_loss < best_val_loss:
                best_state = copy.deepcopy(model.state_dict())
                best_val_loss = val_loss
            else:
                # Anneal the learning rate if no improvement has been seen in the validation
                # dataset.
                lr /= 4.0
    except KeyboardInterrupt:
        log("-" * 89)
        log("Exiting from training early")

    # Load the best saved model.
    if best_state is not None:
        model.load_state_dict(best_state)
    # after load the rnn params are not a continuous chunk of memory
    # this makes them a continuous chunk, and will speed up forward pass
    # Currently, only rnn model supports flatten_parameters function.
    if args.model in ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]:
        model.rnn.flatten_parameters()

    # Run on test data.
    test_loss = evaluate(test_data)
    log("=" * 89)
    log(
        "| End of training | test loss {:5.2f} | test ppl {:8.2f}".format(  # noqa: UP032
            test_loss, math.exp(test_loss)
        )
    )
    log("=" * 89)

    epochs = float(epochs_done)
    if state["stopped"]:
        epochs += state["batches"] / nbatches
    print(
        json.dumps(
            {
                "test_loss": test_loss,
                "test_ppl": math.exp(test_loss),
                "train_tokens_seen": state["tokens"],
                "seconds": round(state["seconds"], 3),
                "epochs": round(epochs, 4),
                "vocab": len(corpus.dictionary),
                "test_tokens": corpus.test.numel(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

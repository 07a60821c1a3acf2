"""`plots.save`: a figure is a pure function of its inputs, PDF included (no creation date)."""


def test_the_same_figure_saves_the_same_bytes(tmp_path):
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from overopt.plots import save

    def draw(name):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [0, 1, 4])
        save(fig, str(tmp_path / f"{name}.pdf"))
        plt.close(fig)
        return (tmp_path / f"{name}.pdf").read_bytes(), (tmp_path / f"{name}.png").read_bytes()

    a = draw("a")
    time.sleep(1.1)  # a creation date in seconds would differ
    assert draw("b") == a and a[0].startswith(b"%PDF") and b"CreationDate" not in a[0]

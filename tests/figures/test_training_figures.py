from matplotlib.figure import Figure

from minilora.figures import REGISTRY
from minilora.figures.training import cosine_annealing


def test_cosine_annealing_registered_with_blog_name():
    assert REGISTRY["cosine_annealing"].blog_name == "余弦退火.png"
    fig = cosine_annealing()
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) >= 2

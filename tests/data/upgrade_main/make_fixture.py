import os, shutil, sys, json
sys.path.insert(0, "tests")
from pathlib import Path
from fakeapi import FakeOpenAI
from test_run import invoke, make_project
RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low, moderation: low}
catalog: {path: products.csv, key: "{{ item.sku }}", where: "item.active == 'yes'"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
  - id: beach
    edit:
      image: {step: hero}
      mask: {step: bg_mask}
      prompt: "a tropical beach at sunset as background"
  - id: small
    resize: {image: {step: beach}, size: 256x256}
"""
root = Path(sys.argv[1])
shutil.rmtree(root, ignore_errors=True)
make_project(root, RECIPE, "sku,name,active\nmug,ceramic mug,yes\nboard,cutting board,yes\n")
with FakeOpenAI() as api:
    r = invoke(root, "run", "recipe.yaml", env={"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1"})
    print(r.exit_code, r.output)
    print([q.path for q in api.image_requests], [ (q.json or q.fields) for q in api.image_requests][-1])
